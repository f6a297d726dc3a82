//! Concurrent large event batches over real HTTP take bounded memory: 64
//! batches of 8 MB at once all get their answer, while the bodies the host
//! holds stay within its budget (issue 9 measured 303 MB for this).

use delegate_host::callback::budget::{BUDGET_BYTES, peak_body_bytes};
use delegate_proto::api::{self, MAX_EVENTS_BODY, PROTOCOL_HEADER};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;

use crate::support::guest::host_with_silent_jobs;

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_batches_stay_within_the_body_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _fake, guests) =
        host_with_silent_jobs(dir.path(), 1, |s| s.max_log_bytes = 1 << 20).await;
    let g = &guests[0];
    // One body shared by every request (the client holds it once): a log
    // chunk that fills the largest batch. After the first, each is a
    // duplicate by seq that the host still has to read and parse.
    let text = "x".repeat(MAX_EVENTS_BODY - 200);
    let body: &'static [u8] = Vec::leak(
        serde_json::json!({"events": [{"seq": 1, "time_ms": 0, "type": "log",
            "stream": "stdout", "offset": 0, "text": text}]})
        .to_string()
        .into_bytes(),
    );
    drop(text);
    assert!(body.len() <= MAX_EVENTS_BODY);
    let url = format!("{}{}", host.base_url(), api::events_path(&g.job_id));
    let token = g.token().to_string();
    let before = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        })
    };
    let http = reqwest::Client::new();
    let sends = (0..64).map(|_| {
        http.post(&url)
            .bearer_auth(&token)
            .header(PROTOCOL_HEADER, "1")
            .header("content-type", "application/json")
            .body(body)
            .send()
    });
    for resp in futures_util::future::join_all(sends).await {
        assert_eq!(resp.unwrap().status(), StatusCode::OK);
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let grew = peak.saturating_sub(before);
    eprintln!(
        "64 concurrent 8 MB batches: RSS {} MB before, peak {} MB (+{} MB); \
         body bytes held at most {} MB",
        before >> 20,
        peak >> 20,
        grew >> 20,
        peak_body_bytes() >> 20
    );
    // Each held body costs about three times its size (bytes, parsed,
    // decoded); the rest of this test process is shared with other tests.
    assert!(grew < 160 << 20, "RSS grew by {} MB", grew >> 20);
    assert!(peak_body_bytes() <= BUDGET_BYTES);
    assert!(
        peak_body_bytes() > 0,
        "the batches took shares of the budget"
    );
    host.stop().await;
}
