//! How a VM learns its job: `{v, job_id, callback_url, token}`.
//!
//! The provider puts it where `delegate-guest boot` looks: a file written by
//! the guest agent (Proxmox), a fw_cfg entry (QEMU), or a file handed to the
//! child (local sandbox). The token is the job's only credential.

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
    /// Base URL of the host's callback API, e.g. `http://10.0.0.1:8765`.
    pub callback_url: String,
    /// The job's bearer token (256 random bits, hex).
    pub token: String,
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
        if !(self.callback_url.starts_with("http://") || self.callback_url.starts_with("https://"))
        {
            return Err(BootstrapError::Field {
                field: "callback_url",
                rule: "must be an http:// or https:// URL",
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

// The token must never reach a log line through `{:?}`.
impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("v", &self.v)
            .field("job_id", &self.job_id)
            .field("callback_url", &self.callback_url)
            .field("token", &crate::REDACTED)
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
        }
    }

    #[test]
    fn round_trips_with_padding() {
        let mut bytes = serde_json::to_vec(&sample()).unwrap();
        bytes.extend_from_slice(b"\n\0\0");
        assert_eq!(Bootstrap::from_json(&bytes).unwrap(), sample());
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
        let mut b = sample();
        b.token = "short".into();
        assert!(b.check().is_err());
        assert!(Bootstrap::from_json(b"{\"v\":1}").is_err());
    }
}
