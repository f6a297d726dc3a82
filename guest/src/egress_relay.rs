//! Where the job reaches the host's egress gateway. A bootstrap's
//! `egress_url` of `http://…` is used as it is (QEMU's forwarded address);
//! one of `unix://…` names the gateway's socket bound into a sandbox that
//! has no network but loopback, so the guest listens on a loopback port
//! and relays each connection to that socket: `HTTP_PROXY` then names an
//! ordinary `http://127.0.0.1:PORT` that every tool understands.
//!
//! The relay only joins bytes: the gateway still asks each request for the
//! job's token, so the job gains nothing by connecting to it directly.

use std::path::{Path, PathBuf};

use delegate_proto::bootstrap::{CallbackAddress, callback_address};
use tokio::net::{TcpListener, UnixStream};

/// Why the gateway cannot be offered to the job.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The bootstrap's `egress_url` is not usable.
    #[error("bootstrap egress_url {url:?}: {rule}")]
    Url {
        /// The URL.
        url: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The loopback listener could not be opened.
    #[error("cannot listen on loopback for the egress relay: {0}")]
    Listen(#[source] std::io::Error),
}

/// The gateway's base URL for this job (`http://host:port`): `egress_url`
/// itself, or the loopback relay started for a socket. The relay runs on
/// the current runtime for as long as it lives (the job's).
pub async fn gateway_base(egress_url: &str) -> Result<String, RelayError> {
    match callback_address(egress_url) {
        Ok(CallbackAddress::Http(url)) => Ok(url.trim_end_matches('/').to_string()),
        Ok(CallbackAddress::Unix(path)) => {
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(RelayError::Listen)?;
            let port = listener.local_addr().map_err(RelayError::Listen)?.port();
            tokio::spawn(relay(listener, path.to_path_buf()));
            Ok(format!("http://127.0.0.1:{port}"))
        }
        Err(rule) => Err(RelayError::Url {
            url: egress_url.to_string(),
            rule,
        }),
    }
}

/// Accepts forever, one task per connection.
async fn relay(listener: TcpListener, socket: PathBuf) {
    loop {
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                crate::say!("delegate-guest: egress relay: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            if let Err(e) = join(client, &socket).await {
                crate::say!("delegate-guest: egress relay: {e}");
            }
        });
    }
}

async fn join(mut client: tokio::net::TcpStream, socket: &Path) -> std::io::Result<()> {
    let mut gateway = UnixStream::connect(socket).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("connecting {}: {e}", socket.display()))
    })?;
    // Large buffers: a bulk download is not held back 8 KiB at a time.
    const BUF: usize = 256 * 1024;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut gateway, BUF, BUF).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_socket_is_offered_as_a_loopback_port_and_bytes_go_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let gateway = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = gateway.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .await
                .unwrap();
        });
        let url = format!("unix://{}", path.display());
        let base = gateway_base(&url).await.unwrap();
        let addr = base.strip_prefix("http://").unwrap();
        assert!(addr.starts_with("127.0.0.1:"), "{base}");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"PING");
    }

    #[tokio::test]
    async fn an_http_address_is_used_as_it_is_and_nonsense_refused() {
        assert_eq!(
            gateway_base("http://10.0.2.100:3128/").await.unwrap(),
            "http://10.0.2.100:3128"
        );
        assert!(matches!(
            gateway_base("ftp://x").await,
            Err(RelayError::Url { .. })
        ));
    }
}
