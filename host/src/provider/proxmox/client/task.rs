//! Tasks: PVE answers long operations with a UPID and runs them as a worker
//! on the VM's node. We poll `/nodes/{node}/tasks/{upid}/status` on the node
//! named inside the UPID until `stopped`; `OK` and `WARNINGS: n` are success,
//! any other exit status is the error, reported with the log's last lines.
//!
//! UPID layout: `UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:`.

use std::time::{Duration, Instant};

use super::error::PveError;
use super::wire::{Params, TaskLogLine, TaskStatus};
use super::{Method, PveClient};

/// A parsed UPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    /// The whole text.
    pub text: String,
    /// The node running the task.
    pub node: String,
    /// Task type: `qmclone`, `qmstart`, `qmstop`, `qmdestroy`, `resize`, ...
    pub kind: String,
    /// The object (usually the VMID).
    pub id: String,
    /// Who started it.
    pub user: String,
}

impl Upid {
    /// Parses a UPID.
    pub fn parse(text: &str) -> Result<Self, PveError> {
        let bad = || PveError::BadUpid(text.to_string());
        let rest = text.strip_prefix("UPID:").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        // node, pid, pstart, starttime, type, id, user, "" (trailing colon).
        if parts.len() < 7 {
            return Err(bad());
        }
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts[0].is_empty() || !hex(parts[1]) || !hex(parts[2]) || !hex(parts[3]) {
            return Err(bad());
        }
        // A token user contains '!' but no ':', so the split is unambiguous.
        Ok(Upid {
            text: text.to_string(),
            node: parts[0].to_string(),
            kind: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
        })
    }
}

/// Whether a stopped task's exit status means success.
pub fn is_success(exitstatus: &str) -> bool {
    let s = exitstatus.trim();
    s == "OK" || s.starts_with("WARNINGS:")
}

/// How often to poll: quickly at first (most tasks take a second or two),
/// then every two seconds.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(2) {
        Duration::from_millis(100)
    } else if elapsed < Duration::from_secs(10) {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    }
}

impl PveClient {
    /// Waits for a task to stop; `Err(Task)` with its log tail when it failed.
    pub async fn wait_task(&self, upid: &Upid, timeout: Duration) -> Result<(), PveError> {
        let started = Instant::now();
        let path = format!(
            "/nodes/{}/tasks/{}/status",
            upid.node,
            urlencode(&upid.text)
        );
        loop {
            let status: TaskStatus = self.get(&path, Params::new()).await?;
            if status.status == "stopped" {
                let exit = status.exitstatus.unwrap_or_default();
                if is_success(&exit) {
                    if exit.starts_with("WARNINGS") {
                        tracing::warn!(upid = %upid.text, exit, "PVE task ended with warnings");
                    }
                    return Ok(());
                }
                let log_tail = self.task_log_tail(upid, 8).await.unwrap_or_default();
                return Err(PveError::Task {
                    node: upid.node.clone(),
                    kind: upid.kind.clone(),
                    upid: upid.text.clone(),
                    exitstatus: exit,
                    log_tail,
                });
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(PveError::TaskTimeout {
                    upid: upid.text.clone(),
                    waited_secs: elapsed.as_secs(),
                });
            }
            tokio::time::sleep(poll_interval(elapsed).min(timeout - elapsed)).await;
        }
    }

    /// The last `n` lines of a task's log.
    pub async fn task_log_tail(&self, upid: &Upid, n: usize) -> Result<Vec<String>, PveError> {
        let path = format!("/nodes/{}/tasks/{}/log", upid.node, urlencode(&upid.text));
        let lines: Vec<TaskLogLine> = self
            .get(&path, Params::new().int("start", 0).int("limit", 1000))
            .await?;
        let skip = lines.len().saturating_sub(n);
        Ok(lines
            .into_iter()
            .skip(skip)
            .map(|l| l.t)
            .filter(|t| !t.trim().is_empty())
            .collect())
    }

    /// Calls an endpoint that answers with a UPID and waits for the task.
    pub async fn run_task(
        &self,
        method: Method,
        path: &str,
        params: Params,
        timeout: Duration,
    ) -> Result<Upid, PveError> {
        let value = self.call(method, path, params).await?;
        let text = value.as_str().ok_or_else(|| PveError::Decode {
            method: method.as_str(),
            path: path.to_string(),
            message: format!("expected a UPID, got {value}"),
        })?;
        let upid = Upid::parse(text)?;
        self.wait_task(&upid, timeout).await?;
        Ok(upid)
    }
}

/// Percent-encodes a path segment (UPIDs hold ':' and '@' and '!').
pub fn urlencode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upids() {
        let u = Upid::parse("UPID:pve2:000B1C7E:0183D3C1:67A8F00D:qmclone:9000:delegate@pve!host:")
            .unwrap();
        assert_eq!(u.node, "pve2");
        assert_eq!(u.kind, "qmclone");
        assert_eq!(u.id, "9000");
        assert_eq!(u.user, "delegate@pve!host");
        for bad in ["", "UPID:", "UPID:n:zz:1:1:t:i:u:", "NOPE:a:1:1:1:t:i:u:"] {
            assert!(Upid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_statuses() {
        assert!(is_success("OK"));
        assert!(is_success("WARNINGS: 2"));
        assert!(!is_success("clone failed: no space left on device"));
        assert!(!is_success(""));
    }

    #[test]
    fn encodes_upid_segments() {
        assert_eq!(urlencode("UPID:a:b!c@d"), "UPID%3Aa%3Ab%21c%40d");
    }
}
