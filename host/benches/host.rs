//! Host benchmark (issue 3): memory with jobs stored and running, callback
//! events per second, `list_jobs` over 10,000 jobs, and MCP tool-call
//! latency over stdio with the rmcp client against the real
//! `delegate-host serve`. The engine runs in this process with the provider
//! double of `tests/it/support` (provisioning is instant, its guests
//! speak the real callback protocol over HTTP on 127.0.0.1). Prints figures
//! next to the targets; timing never fails the run.
//!
//! `cargo bench -p delegate-host --bench host`

mod common;

#[path = "../tests/it/support/mod.rs"]
#[expect(
    dead_code,
    reason = "the integration tests' support; the benchmark uses part of it"
)]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_host::jobs::JobManager;
use delegate_host::jobs::manager::MAX_LIST_LIMIT;
use delegate_proto::api::{self, PROTOCOL_HEADER, PROTOCOL_VERSION};
use delegate_proto::event::{Event, EventBatch, EventKind, LogChunk, LogStream, Phase};
use delegate_proto::{Bootstrap, JobState};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use support::fake::FakeProvider;
use support::harness::{Host, eventually, job, settings};

/// Concurrent guests posting event batches, events per batch.
const POSTERS: usize = 4;
const BATCH: usize = 1_000;

/// How big a run is. `cargo bench` passes `--bench` and gets the real
/// figures; `cargo test --all-targets` runs this binary too, and then a
/// small pass only proves that every measurement still works.
struct Scale {
    /// Jobs stored before the idle-with-jobs reading.
    stored: usize,
    /// Jobs stored for `list_jobs` (at least `stored + running.1 + POSTERS`).
    listed: usize,
    /// Running jobs at the two memory readings.
    running: [usize; 2],
    /// How long the guests post events.
    post_for: Duration,
    /// MCP calls per latency figure.
    mcp_calls: usize,
}

const FULL: Scale = Scale {
    stored: 1_000,
    listed: 10_000,
    running: [200, 1_000],
    post_for: Duration::from_secs(5),
    mcp_calls: 2_000,
};
const SMOKE: Scale = Scale {
    stored: 20,
    listed: 60,
    running: [5, 10],
    post_for: Duration::from_millis(300),
    mcp_calls: 20,
};

static SCALE: std::sync::OnceLock<&'static Scale> = std::sync::OnceLock::new();

fn scale() -> &'static Scale {
    SCALE.get().copied().unwrap_or(&FULL)
}

/// One printed line: what, the figure, the target.
struct Row(String, String, &'static str);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("smoke run (under `cargo test`): figures are not measurements");
        let _ = SCALE.set(&SMOKE);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut rows = Vec::new();
    rt.block_on(engine_figures(&data, &mut rows));
    drop(rt);
    // The MCP client on one thread, as a latency-minded client would run it:
    // the calls and rmcp's service loop then never wait for each other
    // across threads, and the figures are the server's.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    client_rt.block_on(mcp_figures(dir.path(), &data, &mut rows));
    println!("\n{:<58} {:>16}  target", "measure", "figure");
    println!("{}", "-".repeat(96));
    for Row(what, figure, target) in rows {
        println!("{what:<58} {figure:>16}  {target}");
    }
}

/// VmRSS of a process, in MiB.
fn rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// p50 and p99 of the samples.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99))
}

/// Submits `n` jobs with the fake's script `task`, returns their ids.
async fn submit(m: &JobManager, n: usize, task: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(m.submit(job(task)).await.expect("submit").id);
    }
    ids
}

/// Waits until at least `n` jobs are in `state`.
async fn until_count(m: &JobManager, state: JobState, n: usize) {
    eventually(600, &format!("{n} jobs to be {state}"), || async {
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = m
                .list(Some(state), MAX_LIST_LIMIT, cursor.as_deref())
                .ok()?;
            count += page.items.len();
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        (count >= n).then_some(())
    })
    .await;
}

async fn engine_figures(data: &Path, rows: &mut Vec<Row>) {
    let me = std::process::id().to_string();
    let mut fake = FakeProvider::new();
    // Running guests only keep their lease: one small post every 5 s.
    fake.heartbeat = Duration::from_secs(5);
    let s = settings(data, |s| {
        s.max_running = 2_000;
        s.max_provisioning = 2_000;
        s.heartbeat_threshold = Duration::from_secs(120);
    });
    let host = Host::start(s, Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rows.push(Row(
        "RSS idle, engine in the bench process".into(),
        mib(rss_mib(&me)),
        "< 30 MB",
    ));

    // Stored jobs: provisioning fails at once, so they end final.
    let t = Instant::now();
    submit(&m, scale().stored, "provision=fail").await;
    until_count(&m, JobState::Failed, scale().stored).await;
    rows.push(Row(
        format!("submit + finish {} jobs (fake provider)", scale().stored),
        ms(t.elapsed()),
        "",
    ));
    rows.push(Row(
        format!("RSS with {} jobs stored", scale().stored),
        mib(rss_mib(&me)),
        "",
    ));

    let (events, secs) = events_per_second(&m, &fake).await;
    rows.push(Row(
        format!("callback events/s ({POSTERS} guests, batches of {BATCH} log chunks)"),
        format!("{:.0}/s", events as f64 / secs),
        ">= 50,000/s",
    ));

    for running in scale().running {
        submit(&m, running - running_now(&m), "hang").await;
        until_count(&m, JobState::Running, running + POSTERS).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        rows.push(Row(
            format!("RSS with {running} jobs running (guests heartbeat)"),
            mib(rss_mib(&me)),
            if running == 1_000 { "< 100 MB" } else { "" },
        ));
    }
    // Quiet the guests before timing reads.
    fake.kill_all();

    let more = scale()
        .listed
        .saturating_sub(scale().stored + scale().running[1] + POSTERS);
    let t = Instant::now();
    submit(&m, more, "provision=fail").await;
    until_count(&m, JobState::Failed, scale().stored + more).await;
    rows.push(Row(
        format!("submit + finish {more} more jobs"),
        ms(t.elapsed()),
        "",
    ));
    let mut first = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let page = m.list(None, 20, None).unwrap();
        first.push(t.elapsed());
        assert_eq!(page.items.len(), 20);
    }
    let (p50, p99) = percentiles(first);
    rows.push(Row(
        format!(
            "JobManager::list first page of 20, {} stored, p50",
            scale().listed
        ),
        ms(p50),
        "",
    ));
    rows.push(Row("  p99".into(), ms(p99), ""));
    let t = Instant::now();
    let (mut seen, mut cursor) = (0, None::<String>);
    loop {
        let page = m.list(None, 200, cursor.as_deref()).unwrap();
        seen += page.items.len();
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    rows.push(Row(
        format!("JobManager::list all {seen} jobs, pages of 200"),
        ms(t.elapsed()),
        "",
    ));
    rows.push(Row(
        format!("RSS with {seen} jobs stored, guests gone"),
        mib(rss_mib(&me)),
        "",
    ));
    host.stop().await;
}

fn running_now(m: &JobManager) -> usize {
    m.list(Some(JobState::Running), MAX_LIST_LIMIT, None)
        .map(|p| p.items.len())
        .unwrap_or(0)
        .saturating_sub(POSTERS)
}

/// `POSTERS` silent jobs whose guest is this bench: each fetches its
/// manifest, then posts batches of `BATCH` log chunks for `scale().post_for`.
async fn events_per_second(m: &JobManager, fake: &FakeProvider) -> (u64, f64) {
    let ids = submit(m, POSTERS, "silent").await;
    let mut boots = Vec::new();
    for id in &ids {
        boots.push(eventually(60, "the bootstrap", || async { fake.bootstrap(id) }).await);
    }
    let start = Instant::now();
    let posters: Vec<_> = boots
        .into_iter()
        .map(|b| tokio::spawn(post(b, start)))
        .collect();
    let mut total = 0;
    for p in posters {
        total += p.await.expect("poster");
    }
    (total, start.elapsed().as_secs_f64())
}

async fn post(b: Bootstrap, start: Instant) -> u64 {
    let http = reqwest::Client::new();
    let req = |method, path: String| {
        http.request(method, format!("{}{path}", b.callback_url))
            .bearer_auth(&b.token)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
    };
    let manifest = req(reqwest::Method::GET, api::manifest_path(&b.job_id))
        .send()
        .await
        .expect("GET manifest");
    assert!(manifest.status().is_success(), "{}", manifest.status());
    let line = b"a log line of a typical length, some sixty bytes or so.....\n";
    let (mut seq, mut offset, mut sent) = (0u64, 0u64, 0u64);
    while start.elapsed() < scale().post_for {
        let mut events = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            seq += 1;
            let kind = if seq == 1 {
                EventKind::Phase {
                    phase: Phase::Running,
                    message: None,
                }
            } else {
                let chunk = LogChunk::new(LogStream::Stdout, offset, line);
                offset += line.len() as u64;
                EventKind::Log(chunk)
            };
            events.push(Event {
                seq,
                time_ms: 0,
                kind,
            });
        }
        let body = serde_json::to_vec(&EventBatch { events }).unwrap();
        let resp = req(reqwest::Method::POST, api::events_path(&b.job_id))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST events");
        assert!(resp.status().is_success(), "events: {}", resp.status());
        // Count only what the host says it holds.
        let ack: delegate_proto::event::EventsAck = resp.json().await.expect("events ack");
        assert_eq!(
            ack.highest_seq, seq,
            "the host did not take the whole batch"
        );
        sent += BATCH as u64;
    }
    sent
}

/// MCP over stdio against the real server on the same data directory.
async fn mcp_figures(scratch: &Path, data: &Path, rows: &mut Vec<Row>) {
    let cmd = common::serve_command(data);
    let log = std::fs::File::create(scratch.join("serve.log")).expect("serve.log");
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(log)
        .spawn()
        .expect("spawn delegate-host serve");
    let pid = transport.id().expect("server pid").to_string();
    let client = ().serve(transport).await.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(scratch.join("serve.log")).unwrap_or_default();
        panic!("MCP over stdio did not start: {e}\n{log}")
    });
    let call = |name: &'static str, args: Value| {
        let args = args.as_object().cloned().unwrap_or_default();
        let client = &client;
        async move {
            let t = Instant::now();
            let r = client
                .call_tool(CallToolRequestParams::new(name).with_arguments(args))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_ne!(r.is_error, Some(true), "{name}: {r:?}");
            (t.elapsed(), r.structured_content.unwrap_or(Value::Null))
        }
    };
    let (_, first) = call("list_jobs", json!({"limit": 1})).await;
    let id = first["jobs"][0]["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id in {first}"))
        .to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rows.push(Row(
        format!(
            "RSS of `delegate-host serve` idle, {} jobs stored",
            scale().listed
        ),
        mib(rss_mib(&pid)),
        "< 30 MB",
    ));
    let mut samples = Vec::with_capacity(scale().mcp_calls);
    for _ in 0..scale().mcp_calls {
        samples.push(call("get_job_status", json!({"job_id": id})).await.0);
    }
    let (p50, p99) = percentiles(samples);
    rows.push(Row(
        format!(
            "MCP get_job_status over stdio, {} calls, p50",
            scale().mcp_calls
        ),
        ms(p50),
        "< 0.2 ms",
    ));
    rows.push(Row("  p99".into(), ms(p99), ""));
    let mut samples = Vec::new();
    for _ in 0..(scale().mcp_calls / 4) {
        samples.push(call("list_jobs", json!({"limit": 20})).await.0);
    }
    let (p50, p99) = percentiles(samples);
    rows.push(Row(
        "MCP list_jobs first page of 20, p50".into(),
        ms(p50),
        "",
    ));
    rows.push(Row("  p99".into(), ms(p99), ""));
    let t = Instant::now();
    let (mut seen, mut cursor) = (0, None::<String>);
    loop {
        let mut args = json!({"limit": 200});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let (_, page) = call("list_jobs", args).await;
        seen += page["jobs"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    rows.push(Row(
        format!("MCP list_jobs all {seen} jobs, pages of 200"),
        ms(t.elapsed()),
        "",
    ));
    rows.push(Row(
        "RSS of `delegate-host serve` after the calls".into(),
        mib(rss_mib(&pid)),
        "< 30 MB",
    ));
    let _ = client.cancel().await;
}
