//! How a VM learns its job: `{v, job_id, callback_url, token}`.
//!
//! The provider puts it where `delegate-guest boot` looks: a file written by
//! the guest agent (Proxmox), a fw_cfg entry (QEMU), or a file handed to the
//! sandbox (local provider). The token is the job's only credential.
//!
//! The callback URL is `http://` or `https://`, or `unix://` and the absolute
//! path of a Unix socket (the local sandbox has no network: its one way out
//! is the host's socket bound into it).
//!
//! `egress_url` says where this guest reaches the host's egress gateway
//! when that differs from what the host's `JobSpec` says: a provider that
//! confines the guest's network (the local sandbox, a QEMU micro VM) sets
//! it to the one way it left open. It is optional and absent unless set,
//! so guests that predate it keep reading bootstraps that do not use it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The bootstrap format version this crate writes and reads.
pub const BOOTSTRAP_VERSION: u32 = 1;

/// Everything the guest needs to find its job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Format version, [`BOOTSTRAP_VERSION`].
    pub v: u32,
    /// The job this VM serves.
    pub job_id: String,
    /// Base URL of the host's callback API, e.g. `http://10.0.0.1:8765`, or
    /// its Unix socket, e.g. `unix:///run/delegate/host/callback.sock`.
    pub callback_url: String,
    /// The job's bearer token (256 random bits, hex).
    pub token: String,
    /// The egress gateway as this guest reaches it: an `http://` base URL
    /// (a forwarded address) or `unix://` and the path of the gateway's
    /// socket (the guest then relays a loopback port to it). `None`: use
    /// the URLs in the job's `EgressSpec` as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_url: Option<String>,
}

/// Why a bootstrap was refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Not JSON of the right shape.
    #[error("bootstrap is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this guest does not speak.
    #[error("bootstrap version {0} is not supported (expected {BOOTSTRAP_VERSION})")]
    Version(u32),
    /// A field is empty or malformed.
    #[error("bootstrap field {field}: {rule}")]
    Field {
        /// The field.
        field: &'static str,
        /// The rule.
        rule: &'static str,
    },
}

impl Bootstrap {
    /// Parses and checks a bootstrap document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BootstrapError> {
        // fw_cfg and SMBIOS sources may pad with NULs or newlines.
        let end = bytes
            .iter()
            .rposition(|b| !matches!(b, 0 | b'\n' | b'\r' | b' '))
            .map_or(0, |i| i + 1);
        let b: Bootstrap = serde_json::from_slice(&bytes[..end])?;
        b.check()?;
        Ok(b)
    }

    /// Checks the fields.
    pub fn check(&self) -> Result<(), BootstrapError> {
        if self.v != BOOTSTRAP_VERSION {
            return Err(BootstrapError::Version(self.v));
        }
        if !crate::api::is_valid_job_id(&self.job_id) {
            return Err(BootstrapError::Field {
                field: "job_id",
                rule: "must be a job id (letters, digits and '-', at most 64)",
            });
        }
        if let Err(rule) = callback_address(&self.callback_url) {
            return Err(BootstrapError::Field {
                field: "callback_url",
                rule,
            });
        }
        if let Some(url) = &self.egress_url
            && let Err(rule) = callback_address(url)
        {
            return Err(BootstrapError::Field {
                field: "egress_url",
                rule,
            });
        }
        if self.token.len() < 32 || !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BootstrapError::Field {
                field: "token",
                rule: "must be at least 32 printable characters",
            });
        }
        Ok(())
    }
}

/// What a callback URL prefix `unix://` is followed by: an absolute path.
pub const UNIX_URL_PREFIX: &str = "unix://";
/// The longest socket path `connect(2)` takes (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where a guest reaches the callback API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAddress<'a> {
    /// An `http://` or `https://` base URL (checked further by the client).
    Http(&'a str),
    /// A Unix socket; requests go to `http://localhost` over it.
    Unix(&'a Path),
}

/// Classifies a callback URL, or says which rule it breaks.
pub fn callback_address(url: &str) -> Result<CallbackAddress<'_>, &'static str> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(CallbackAddress::Http(url));
    }
    let Some(path) = url.strip_prefix(UNIX_URL_PREFIX) else {
        return Err("must be an http://, https:// or unix:// URL");
    };
    if !path.starts_with('/') {
        return Err("a unix:// URL must name an absolute socket path (unix:///run/...)");
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err("a unix:// socket path must be at most 107 bytes");
    }
    if path.split('/').any(|c| c == "..") || path.bytes().any(|b| b == 0 || b == b'?' || b == b'#')
    {
        return Err("a unix:// socket path must not contain '..', '?', '#' or NUL");
    }
    Ok(CallbackAddress::Unix(Path::new(path)))
}

/// The `unix://` callback URL of a socket path.
pub fn unix_callback_url(socket: &Path) -> String {
    format!("{UNIX_URL_PREFIX}{}", socket.display())
}

// The token must never reach a log line through `{:?}`.
impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("v", &self.v)
            .field("job_id", &self.job_id)
            .field("callback_url", &self.callback_url)
            .field("token", &crate::REDACTED)
            .field("egress_url", &self.egress_url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bootstrap {
        Bootstrap {
            v: 1,
            job_id: "0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            callback_url: "http://10.0.2.2:8765".into(),
            token: "a".repeat(64),
            egress_url: None,
        }
    }

    #[test]
    fn round_trips_with_padding() {
        let mut bytes = serde_json::to_vec(&sample()).unwrap();
        bytes.extend_from_slice(b"\n\0\0");
        assert_eq!(Bootstrap::from_json(&bytes).unwrap(), sample());
    }

    #[test]
    fn unix_socket_urls_name_an_absolute_path() {
        let mut b = sample();
        b.callback_url = unix_callback_url(Path::new("/run/delegate/host/callback.sock"));
        assert_eq!(b.callback_url, "unix:///run/delegate/host/callback.sock");
        b.check().unwrap();
        assert_eq!(
            callback_address(&b.callback_url),
            Ok(CallbackAddress::Unix(Path::new(
                "/run/delegate/host/callback.sock"
            )))
        );
        assert_eq!(
            callback_address("http://10.0.2.2:8765"),
            Ok(CallbackAddress::Http("http://10.0.2.2:8765"))
        );
    }

    #[test]
    fn the_egress_url_is_optional_and_checked_like_the_callback() {
        let without = serde_json::to_string(&sample()).unwrap();
        assert!(!without.contains("egress_url"), "{without}");
        let mut b = sample();
        b.egress_url = Some(unix_callback_url(Path::new(
            "/run/delegate/host/egress.sock",
        )));
        let bytes = serde_json::to_vec(&b).unwrap();
        assert_eq!(Bootstrap::from_json(&bytes).unwrap(), b);
        b.egress_url = Some("unix://relative.sock".into());
        assert!(matches!(
            b.check(),
            Err(BootstrapError::Field {
                field: "egress_url",
                ..
            })
        ));
    }

    #[test]
    fn debug_hides_token() {
        assert!(!format!("{:?}", sample()).contains(&"a".repeat(64)));
    }

    #[test]
    fn refuses_bad_fields() {
        let mut b = sample();
        b.v = 2;
        assert!(matches!(b.check(), Err(BootstrapError::Version(2))));
        let mut b = sample();
        b.job_id = "../etc".into();
        assert!(b.check().is_err());
        let mut b = sample();
        b.callback_url = "file:///etc/passwd".into();
        assert!(b.check().is_err());
        for bad in [
            "unix://run/x.sock",
            "unix:///run/../etc/x.sock",
            "unix:///run/x.sock?a",
            "unix://",
        ] {
            b.callback_url = bad.into();
            assert!(b.check().is_err(), "{bad}");
        }
        b.callback_url = format!("unix:///{}", "a".repeat(MAX_SOCKET_PATH));
        assert!(b.check().is_err());
        let mut b = sample();
        b.token = "short".into();
        assert!(b.check().is_err());
        assert!(Bootstrap::from_json(b"{\"v\":1}").is_err());
    }
}
