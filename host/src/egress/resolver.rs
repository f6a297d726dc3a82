//! Name resolution for the gateway: the gateway, not the job, resolves
//! every destination, so the addresses it checks are the ones it connects
//! to. [`Resolve`] is a trait so tests can map their stand-in host names to
//! loopback servers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Resolves a host name to addresses.
#[async_trait::async_trait]
pub trait Resolve: std::fmt::Debug + Send + Sync {
    /// The addresses of `host` (an IP literal resolves to itself).
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo` on the blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A fixed table of names; any other name does not resolve. For tests,
/// whose stand-ins for external hosts listen on 127.0.0.1.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: BTreeMap<String, IpAddr>,
}

impl StaticResolver {
    /// Adds `name` → `ip`.
    pub fn with(mut self, name: &str, ip: IpAddr) -> Self {
        self.names.insert(name.to_ascii_lowercase(), ip);
        self
    }
}

#[async_trait::async_trait]
impl Resolve for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match self.names.get(&host.to_ascii_lowercase()) {
            Some(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} is not in the test resolver"),
            )),
        }
    }
}
