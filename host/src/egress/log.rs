//! The connection log: one record per connection the gateway allowed
//! (written when it closes, with the bytes each way) or denied (written at
//! once, with the reason), appended to the job's `egress.jsonl` in the
//! store; and the summary `get_job_status` shows.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// How a connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `CONNECT` (a TLS tunnel the gateway does not read).
    Connect,
    /// A plain-HTTP request forwarded by the gateway.
    Http,
    /// The Anthropic endpoint, with the host's credential injected.
    Anthropic,
    /// A request inside a `CONNECT` to a host where the gateway injects a
    /// credential (TLS terminated with its own CA, re-encrypted upstream).
    Inject,
}

/// One connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// When it was decided (RFC 3339).
    pub time: String,
    /// The destination host as the job asked for it.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// How it came in.
    pub via: Via,
    /// Whether it was let through.
    pub allowed: bool,
    /// Why it was refused (or failed upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes from the job to the destination.
    pub sent: u64,
    /// Bytes from the destination to the job.
    pub received: u64,
}

/// Counts and the last denials, for a job's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct EgressSummary {
    /// Connections allowed.
    pub allowed: u64,
    /// Connections denied.
    pub denied: u64,
    /// The last few denied destinations (`host:port: why`), newest last.
    pub last_denied: Vec<String>,
}

/// How many denials the summary keeps.
const LAST_DENIED: usize = 5;

impl ConnRecord {
    /// A record stamped now.
    pub fn now(host: &str, port: u16, via: Via) -> Self {
        ConnRecord {
            time: crate::clock::rfc3339(crate::clock::now_ms()),
            host: host.to_string(),
            port,
            via,
            allowed: false,
            reason: None,
            sent: 0,
            received: 0,
        }
    }
}

/// Appends `record` to the job's log (on the blocking pool); a failure is
/// logged, never fatal to the connection.
pub async fn append(store: &Store, job_id: &str, record: &ConnRecord) {
    let line = match serde_json::to_string(record) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "egress record does not serialize");
            return;
        }
    };
    let id = job_id.to_string();
    if let Err(e) = store.run(move |s| s.append_egress(&id, &line)).await {
        tracing::error!(job = job_id, error = %e, "cannot append to the egress log");
    }
}

/// The job's whole connection log (torn or foreign lines skipped).
pub fn read(store: &Store, job_id: &str) -> Result<Vec<ConnRecord>, StoreError> {
    Ok(store
        .read_egress(job_id)?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The summary a job's status shows: for a job with a network policy or
/// with anything logged; `None` otherwise (and when the log is unreadable,
/// which the full log then reports).
pub fn summary_of(store: &Store, record: &crate::model::JobRecord) -> Option<EgressSummary> {
    let records = read(store, &record.id).ok()?;
    if records.is_empty() && record.manifest.network.is_none() {
        return None;
    }
    Some(summarize(&records))
}

/// Counts and last denials of a log.
pub fn summarize(records: &[ConnRecord]) -> EgressSummary {
    let mut s = EgressSummary::default();
    for r in records {
        if r.allowed {
            s.allowed += 1;
        } else {
            s.denied += 1;
            let why = r.reason.as_deref().unwrap_or("denied");
            s.last_denied.push(format!("{}:{}: {why}", r.host, r.port));
        }
    }
    let drop = s.last_denied.len().saturating_sub(LAST_DENIED);
    s.last_denied.drain(..drop);
    s
}
