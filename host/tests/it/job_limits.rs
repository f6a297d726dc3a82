//! What a job may ask for is checked against what the host's provider can
//! give, when it is submitted: a job asking for more memory than the
//! machine has is refused with the field and the limit.

use std::sync::Arc;

use delegate_host::jobs::JobError;
use delegate_proto::JobManifest;

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, settings};

fn asking(memory: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": "echo hi",
        "agentType": "script",
        "resources": {"memory": memory},
    }))
    .unwrap_or_else(|e| panic!("{memory}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_beyond_the_providers_is_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), |s| s.max_memory = Some(4 << 30));
    let host = Host::start(s, Arc::new(FakeProvider::new())).await;
    let m = host.manager();
    let err = m.submit(asking("8G")).await.unwrap_err();
    assert!(matches!(err, JobError::InvalidManifest(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("resources.memory"), "{msg}");
    assert!(
        msg.contains("8G is more than this host's provider can give (4G"),
        "{msg}"
    );
    // Within the limit it is taken.
    m.submit(asking("4G")).await.unwrap();
    // 1000000T is refused by the manifest's own rule, before any host.
    let err = JobManifest::from_value(serde_json::json!({
        "task": "x", "agentType": "script", "resources": {"memory": "1000000T"},
    }))
    .and_then(|m| m.validate().map(|()| m))
    .unwrap_err();
    assert_eq!(err.field, "resources.memory");
    host.stop().await;
}
