//! The gate in front of MCP over HTTP: Host and Origin checks against DNS
//! rebinding and cross-site requests (403), then the bearer token (401).
//!
//! Host and Origin come first so that a browser page on another origin
//! learns nothing, not even whether a token would be needed. The token is
//! compared in constant time through its SHA-256 digest, so neither its
//! content nor its length leaks through timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The Host header is missing, malformed or not an allowed name (403).
    #[error("Forbidden: Host {0:?} is not allowed (DELEGATE_ALLOWED_HOSTS)")]
    Host(String),
    /// The Origin header names another site (403).
    #[error("Forbidden: Origin {0:?} is not allowed (DELEGATE_ALLOWED_ORIGINS)")]
    Origin(String),
    /// No bearer token, or a wrong one (401).
    #[error("Unauthorized: a valid bearer token is required")]
    Token,
}

impl Refusal {
    /// The HTTP status for the refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Host(_) | Refusal::Origin(_) => 403,
            Refusal::Token => 401,
        }
    }
}

/// What the gate lets through.
pub struct Guard {
    token_digest: [u8; 32],
    allowed_hosts: Vec<Authority>,
    allowed_origins: Vec<String>,
}

/// A host with an optional port, lower-case, without IPv6 brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Authority> {
        let text = text.trim();
        if text.is_empty() || text.contains(['/', '@', ' ']) {
            return None;
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse().ok()?),
            };
            (host, port)
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address, as written in allow-lists.
            (text, None)
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p.parse().ok()?)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// An allow-list entry without a port allows every port.
    fn allows(&self, other: &Authority) -> bool {
        self.host == other.host && (self.port.is_none() || self.port == other.port)
    }
}

impl Guard {
    /// A gate for `token`, the allowed Host names (`name` or `name:port`)
    /// and extra allowed Origins (`scheme://host[:port]`, or `null`).
    pub fn new(token: &str, allowed_hosts: &[String], allowed_origins: &[String]) -> Guard {
        Guard {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            allowed_hosts: allowed_hosts
                .iter()
                .filter_map(|h| Authority::parse(h))
                .collect(),
            allowed_origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Checks one request's Host, Origin and Authorization header values.
    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<(), Refusal> {
        let host_text = host.unwrap_or("");
        let host_auth =
            Authority::parse(host_text).ok_or_else(|| Refusal::Host(host_text.to_string()))?;
        if !self.allowed_hosts.iter().any(|a| a.allows(&host_auth)) {
            return Err(Refusal::Host(host_text.to_string()));
        }
        if let Some(origin) = origin {
            self.check_origin(origin, &host_auth)?;
        }
        let presented = authorization
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(Refusal::Token)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(&self.token_digest)) {
            Ok(())
        } else {
            Err(Refusal::Token)
        }
    }

    /// An Origin is allowed when listed, or when it is the server itself
    /// (`http`, same host and port as the request's Host).
    fn check_origin(&self, origin: &str, host: &Authority) -> Result<(), Refusal> {
        let normalized = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&normalized) {
            return Ok(());
        }
        let refuse = || Refusal::Origin(origin.to_string());
        let (scheme, authority) = normalized.split_once("://").ok_or_else(refuse)?;
        let mut origin_auth = Authority::parse(authority).ok_or_else(refuse)?;
        if origin_auth.port.is_none() {
            origin_auth.port = match scheme {
                "http" => Some(80),
                "https" => Some(443),
                _ => return Err(refuse()),
            };
        }
        // This server speaks plain HTTP; behind a TLS proxy the operator
        // lists the https origin explicitly.
        let mut host = host.clone();
        if host.port.is_none() {
            host.port = Some(80);
        }
        if scheme == "http" && origin_auth == host {
            Ok(())
        } else {
            Err(refuse())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(
            "s3cret-token",
            &[
                "localhost".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
                "example.org:9000".into(),
            ],
            &["https://app.example.com".into()],
        )
    }

    const OK: Option<&str> = Some("Bearer s3cret-token");

    #[test]
    fn hosts_are_checked_first() {
        let g = guard();
        assert_eq!(g.check(Some("127.0.0.1:8080"), None, OK), Ok(()));
        assert_eq!(g.check(Some("localhost"), None, OK), Ok(()));
        assert_eq!(g.check(Some("[::1]:1234"), None, OK), Ok(()));
        assert_eq!(g.check(Some("example.org:9000"), None, OK), Ok(()));
        for bad in [
            "evil.com",
            "evil.com:8080",
            "example.org:9001",
            "127.0.0.1.evil.com",
            "",
        ] {
            let r = g.check(Some(bad), None, None);
            assert!(matches!(r, Err(Refusal::Host(_))), "{bad}: {r:?}");
            assert_eq!(r.unwrap_err().status(), 403);
        }
        assert!(matches!(g.check(None, None, OK), Err(Refusal::Host(_))));
    }

    #[test]
    fn origins_must_be_the_server_or_listed() {
        let g = guard();
        let host = Some("127.0.0.1:8080");
        assert_eq!(g.check(host, Some("http://127.0.0.1:8080"), OK), Ok(()));
        assert_eq!(g.check(host, Some("https://app.example.com"), OK), Ok(()));
        for bad in [
            "http://evil.com",
            "http://127.0.0.1:9999",
            "null",
            "https://127.0.0.1:8080",
            "garbage",
        ] {
            let r = g.check(host, Some(bad), OK);
            assert!(matches!(r, Err(Refusal::Origin(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn token_must_match_exactly() {
        let g = guard();
        let host = Some("localhost:1");
        assert_eq!(g.check(host, None, Some("bearer s3cret-token")), Ok(()));
        for bad in [
            None,
            Some("Bearer"),
            Some("Bearer s3cret"),
            Some("Bearer s3cret-token2"),
            Some("Basic s3cret-token"),
        ] {
            let r = g.check(host, None, bad);
            assert_eq!(r, Err(Refusal::Token), "{bad:?}");
        }
        assert_eq!(Refusal::Token.status(), 401);
    }
}
