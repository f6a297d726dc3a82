//! Connecting to a destination on a job's behalf: the gateway resolves the
//! name itself, refuses addresses the policy forbids (so a DNS answer
//! pointing at a private address is refused too), and connects to the
//! first address that is allowed.

use std::net::IpAddr;

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
