//! Every way a PVE call fails, with PVE's own message kept, and the one
//! place that reads those messages to decide what kind of failure it was
//! (locked, not found, agent not running, ...) and whether to try again.

use std::collections::BTreeMap;

/// Why a PVE call failed.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The API answered with an error status.
    #[error("{method} {path}: HTTP {status}: {message}{}", fmt_fields(.errors))]
    Api {
        /// HTTP method.
        method: &'static str,
        /// API path (below `/api2/json`).
        path: String,
        /// HTTP status.
        status: u16,
        /// PVE's message (body `message`, else the status line's reason).
        message: String,
        /// Per-parameter errors of a `Parameter verification failed.`
        errors: BTreeMap<String, String>,
    },
    /// The credentials were refused (401), or a ticket could not be had.
    #[error("authentication failed for {principal}: {message}")]
    Unauthorized {
        /// Token id or user.
        principal: String,
        /// What PVE said, or that it said nothing.
        message: String,
    },
    /// The node that should handle the request could not be reached through
    /// the proxy (HTTP 595/596/597).
    #[error("{method} {path}: node unreachable (HTTP {status}): {message}")]
    Unreachable {
        /// HTTP method.
        method: &'static str,
        /// API path.
        path: String,
        /// 595, 596 or 597.
        status: u16,
        /// The proxy's reason.
        message: String,
    },
    /// No answer at all: connection, TLS or timeout.
    #[error("{method} {path}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// API path.
        path: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the schema promises.
    #[error("{method} {path}: unexpected answer: {message}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// API path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A task ended with an error.
    #[error("task {kind} on {node} failed: {exitstatus}{}", fmt_log(.log_tail))]
    Task {
        /// The task's node.
        node: String,
        /// The task type (`qmclone`, `qmstart`, ...).
        kind: String,
        /// The UPID.
        upid: String,
        /// Its exit status text.
        exitstatus: String,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },
    /// A task did not finish within the time we allow it.
    #[error("task {upid} still running after {waited_secs} s")]
    TaskTimeout {
        /// The UPID.
        upid: String,
        /// How long we waited.
        waited_secs: u64,
    },
    /// A UPID that does not parse.
    #[error("not a UPID: {0:?}")]
    BadUpid(String),
    /// The TLS settings cannot be used.
    #[error("TLS setup: {0}")]
    Tls(String),
}

fn fmt_fields(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

fn fmt_log(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!(" [log: {}]", lines.join(" | "))
    }
}

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `VM 100 is locked (clone)`.
    Locked,
    /// `can't lock file ... got timeout` or a `cfs-lock` timeout.
    LockTimeout,
    /// The guest agent is not (yet) answering.
    AgentNotRunning,
    /// `unable to create VM n: config file already exists`.
    ConfigExists,
    /// The VM (or its config) does not exist.
    NotFound,
    /// The VM is not running (for agent calls, stop).
    NotRunning,
    /// Node unreachable, connection failure, 5xx without a known cause.
    Transient,
    /// Credentials refused.
    Auth,
    /// Permission missing (403).
    Forbidden,
    /// Anything else: a 4xx, a task error with no known cause.
    Permanent,
}

impl PveError {
    /// The message PVE gave (or ours).
    pub fn message(&self) -> String {
        match self {
            PveError::Api { message, .. }
            | PveError::Unauthorized { message, .. }
            | PveError::Unreachable { message, .. }
            | PveError::Decode { message, .. } => message.clone(),
            PveError::Task { exitstatus, .. } => exitstatus.clone(),
            other => other.to_string(),
        }
    }

    /// HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } | PveError::Unreachable { status, .. } => Some(*status),
            PveError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Reads PVE's message to tell what happened.
    pub fn kind(&self) -> FailureKind {
        match self {
            PveError::Unauthorized { .. } => return FailureKind::Auth,
            PveError::Unreachable { .. } | PveError::Transport { .. } => {
                return FailureKind::Transient;
            }
            PveError::TaskTimeout { .. } => return FailureKind::Transient,
            PveError::Decode { .. } | PveError::BadUpid(_) | PveError::Tls(_) => {
                return FailureKind::Permanent;
            }
            PveError::Api { status: 403, .. } => return FailureKind::Forbidden,
            _ => {}
        }
        let kind = classify_message(&self.message());
        match (self, kind) {
            (_, Some(k)) => k,
            (PveError::Api { status, .. }, None) if *status >= 500 => FailureKind::Transient,
            _ => FailureKind::Permanent,
        }
    }

    /// Whether the same call may succeed later. 4xx never does.
    pub fn is_retryable(&self) -> bool {
        if let Some(s) = self.status()
            && (400..500).contains(&s)
        {
            return false;
        }
        matches!(
            self.kind(),
            FailureKind::Locked
                | FailureKind::LockTimeout
                | FailureKind::AgentNotRunning
                | FailureKind::Transient
        )
    }
}

/// Reads a PVE error text; `None` when it is none of the known kinds.
pub fn classify_message(message: &str) -> Option<FailureKind> {
    let m = message.to_ascii_lowercase();
    if m.contains("config file already exists") {
        return Some(FailureKind::ConfigExists);
    }
    if m.contains("can't lock file") || m.contains("cfs-lock") || m.contains("got lock timeout") {
        return Some(FailureKind::LockTimeout);
    }
    if is_locked_message(&m) {
        return Some(FailureKind::Locked);
    }
    if m.contains("guest agent is not running")
        || m.contains("qemu guest agent is not running")
        || (m.contains("qmp command") && m.contains("guest-") && m.contains("timeout"))
    {
        return Some(FailureKind::AgentNotRunning);
    }
    if (m.contains("configuration file") && m.contains("does not exist"))
        || m.contains("unable to find configuration file")
        || (m.contains("does not exist") && m.starts_with("vm "))
    {
        return Some(FailureKind::NotFound);
    }
    if m.contains(" not running") {
        return Some(FailureKind::NotRunning);
    }
    None
}

/// `VM 100 is locked (clone)`, `CT 100 is locked (backup)`.
fn is_locked_message(m: &str) -> bool {
    m.find(" is locked (").is_some_and(|i| {
        let head = &m[..i];
        head.starts_with("vm ") || head.starts_with("ct ") || head.starts_with("guest ")
    })
}

/// The lock name of a `... is locked (NAME)` message.
pub fn locked_by(message: &str) -> Option<&str> {
    let start = message.find(" is locked (")? + " is locked (".len();
    let end = message[start..].find(')')? + start;
    Some(&message[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> PveError {
        PveError::Api {
            method: "POST",
            path: "/x".into(),
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn messages_from_errors_txt_are_classified() {
        let cases = [
            ("VM 90001 is locked (clone)", FailureKind::Locked),
            (
                "can't lock file '/var/lock/qemu-server/lock-90001.conf' - got timeout",
                FailureKind::LockTimeout,
            ),
            (
                "cfs-lock 'file-user_cfg' error: got lock request timeout",
                FailureKind::LockTimeout,
            ),
            (
                "unable to create VM 90001: config file already exists",
                FailureKind::ConfigExists,
            ),
            (
                "Configuration file 'nodes/pve1/qemu-server/90001.conf' does not exist",
                FailureKind::NotFound,
            ),
            (
                "QEMU guest agent is not running",
                FailureKind::AgentNotRunning,
            ),
            ("VM 90001 is not running", FailureKind::NotRunning),
        ];
        for (m, k) in cases {
            assert_eq!(api(500, m).kind(), k, "{m}");
        }
        assert_eq!(locked_by("VM 1 is locked (clone)"), Some("clone"));
    }

    #[test]
    fn retry_rules() {
        assert!(api(500, "VM 100 is locked (clone)").is_retryable());
        assert!(api(500, "something broke").is_retryable());
        assert!(!api(400, "Parameter verification failed.").is_retryable());
        assert!(!api(403, "Permission check failed").is_retryable());
        assert!(!api(500, "unable to create VM 1: config file already exists").is_retryable());
        assert!(
            PveError::Unreachable {
                method: "GET",
                path: "/".into(),
                status: 595,
                message: "Connection refused".into()
            }
            .is_retryable()
        );
        let task = PveError::Task {
            node: "n".into(),
            kind: "qmclone".into(),
            upid: "u".into(),
            exitstatus: "clone failed: out of space".into(),
            log_tail: vec![],
        };
        assert!(!task.is_retryable());
    }

    #[test]
    fn display_keeps_field_errors() {
        let mut e = BTreeMap::new();
        e.insert(
            "newid".to_string(),
            "value must be at least 100".to_string(),
        );
        let err = PveError::Api {
            method: "POST",
            path: "/nodes/a/qemu/9000/clone".into(),
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: e,
        };
        assert!(
            err.to_string()
                .contains("newid: value must be at least 100")
        );
    }
}
