//! Connecting to a destination on a job's behalf: the gateway resolves the
//! name itself, refuses addresses the policy forbids (so a DNS answer
//! pointing at a private address is refused too), and connects to the
//! first address that is allowed.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::Shared;
use super::policy::check_addr;

/// Why a connection was not made: refused by policy (`Denied`) or failed
/// (`Failed`); both carry the reason for the log.
#[derive(Debug)]
pub enum ConnectError {
    /// The policy refused every address.
    Denied(String),
    /// Resolution or the connection failed.
    Failed(String),
}

impl ConnectError {
    /// The reason, for the log and the job.
    pub fn reason(&self) -> &str {
        match self {
            ConnectError::Denied(r) | ConnectError::Failed(r) => r,
        }
    }
}

/// A TCP connection to `host:port`, within the address policy.
pub async fn connect(shared: &Shared, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let addrs = shared
        .settings
        .resolver
        .resolve(host, port)
        .await
        .map_err(|e| ConnectError::Failed(format!("cannot resolve {host}: {e}")))?;
    let mut refusal = None;
    let mut failure = None;
    for addr in addrs {
        if let Err(why) = check_addr(&shared.settings, addr.ip(), &shared.own) {
            refusal.get_or_insert(format!("{host} resolves to {why}"));
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(s) => {
                // Small writes (TLS handshakes, requests) should not wait.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => {
                failure.get_or_insert(format!("cannot connect to {addr}: {e}"));
            }
        }
    }
    Err(match (refusal, failure) {
        (_, Some(f)) => ConnectError::Failed(f),
        (Some(r), None) => ConnectError::Denied(r),
        (None, None) => ConnectError::Failed(format!("{host} has no addresses")),
    })
}

/// This host's own addresses (every interface's), which jobs may not reach
/// unless a private range explicitly allows them.
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    ifaddrs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// The TLS client configuration for connections the gateway makes itself
/// (the Anthropic API, injection hosts): the web's public roots plus
/// `extra` (`DELEGATE_EGRESS_UPSTREAM_CA`), HTTP/1.1.
pub fn client_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `tcp` wrapped in TLS to `host`, its certificate verified against
/// [`client_config`]'s roots.
pub async fn tls(
    shared: &Shared,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("upstream name {host}: {e}"))?;
    tokio_rustls::TlsConnector::from(shared.client_tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))
}
