//! Load against the original server's figures (issue 9), over MCP stdio
//! with the rmcp client against the real `delegate-host serve`:
//!
//! - memory under bursts: RSS idle, after one burst of 5,000 concurrent
//!   `get_job_status` calls, and after 12 (target: back near idle; the
//!   original report saw 18 → 75 MB, staying at 70–73 MB);
//! - a full listing: every one of 1,001 jobs with `list_jobs`, pages as
//!   large as allowed (target: at least twice as fast as the original
//!   server's 6–7 ms in one call, so under 3 ms).
//!
//! The original report measured with the official Node MCP client; when
//! Node and its SDK are found (`DELEGATE_NODE_MCP_SDK`, or where
//! `tests/external/run.sh` installs it), the full listing is timed with
//! that client too (`benches/node/list_all.mjs`), against the same server.
//!
//! The jobs are stored first by an engine in this process with the
//! provider double of `tests/it/support` (each fails at provisioning, so it
//! is final at once), then the server runs on that data directory. Prints
//! figures next to the targets; timing never fails the run.
//!
//! `cargo bench -p delegate-host --bench load` (without `--bench`, as
//! under `cargo test --all-targets`, a small pass only proves that every
//! measurement still works).

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

use delegate_host::jobs::manager::MAX_LIST_LIMIT;
use delegate_proto::JobState;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use support::fake::FakeProvider;
use support::harness::{Host, eventually, job, settings};

struct Scale {
    /// Jobs stored and listed.
    jobs: usize,
    /// Concurrent calls per burst.
    burst: usize,
    /// Bursts in all.
    bursts: usize,
    /// Full listings timed.
    listings: usize,
}

const FULL: Scale = Scale {
    jobs: 1_001,
    burst: 5_000,
    bursts: 12,
    listings: 300,
};
const SMOKE: Scale = Scale {
    jobs: 30,
    burst: 50,
    bursts: 2,
    listings: 2,
};

type Client = RunningService<RoleClient, ()>;

fn main() {
    let scale = if std::env::args().any(|a| a == "--bench") {
        &FULL
    } else {
        println!("smoke run (under `cargo test`): figures are not measurements");
        &SMOKE
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(store_jobs(&data, scale.jobs));
    drop(rt);
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rows = client_rt.block_on(measure(dir.path(), &data, scale));
    rows.extend(node_listing(&data, scale));
    println!("\n{:<62} {:>14}  target", "measure", "figure");
    println!("{}", "-".repeat(100));
    for (what, figure, target) in rows {
        println!("{what:<62} {figure:>14}  {target}");
    }
}

/// The Node SDK's directory, when installed.
fn node_sdk() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("DELEGATE_NODE_MCP_SDK")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/external-clients/node/node_modules/@modelcontextprotocol/sdk")
        });
    dir.join("dist/esm/client/index.js")
        .is_file()
        .then_some(dir)
}

/// The full listing through the official Node MCP client, the original
/// report's client, against a server started as `measure` starts it.
fn node_listing(data: &Path, scale: &Scale) -> Vec<(String, String, &'static str)> {
    let what = format!("list_jobs, all {} jobs, Node MCP client, p50", scale.jobs);
    let Some(sdk) = node_sdk() else {
        let why = "skipped: no @modelcontextprotocol/sdk (run tests/external/run.sh once, or set DELEGATE_NODE_MCP_SDK)";
        return vec![(what, "-".into(), why)];
    };
    let serve = common::serve_command(data);
    let serve = serve.as_std();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node/list_all.mjs");
    let mut node = std::process::Command::new("node");
    node.arg(script)
        .arg(sdk)
        .arg(MAX_LIST_LIMIT.to_string())
        .arg(scale.listings.to_string())
        .arg("--")
        .arg(serve.get_program())
        .args(serve.get_args());
    for (key, value) in serve.get_envs() {
        match value {
            Some(v) => node.env(key, v),
            None => node.env_remove(key),
        };
    }
    let out = match node.stderr(std::process::Stdio::inherit()).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("node: {e}");
            return vec![(what, "-".into(), "skipped: node did not start")];
        }
    };
    assert!(out.status.success(), "node list_all.mjs: {}", out.status);
    let figures: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(figures["jobs"], json!(scale.jobs), "{figures}");
    let ms = |key: &str| format!("{:.2} ms", figures[key].as_f64().unwrap_or(f64::NAN));
    vec![
        (what, ms("p50_ms"), "< 3 ms (original, same client: 6-7 ms)"),
        (
            format!("  min (Node {})", figures["node"].as_str().unwrap_or("?")),
            ms("min_ms"),
            "",
        ),
    ]
}

/// Stores `n` final jobs.
async fn store_jobs(data: &Path, n: usize) {
    let s = settings(data, |s| {
        s.max_running = 64;
        s.max_provisioning = 64;
    });
    let host = Host::start(s, Arc::new(FakeProvider::new())).await;
    let m = host.manager().clone();
    for _ in 0..n {
        m.submit(job("provision=fail")).await.expect("submit");
    }
    eventually(600, &format!("{n} jobs to fail"), || async {
        let page = m.list(Some(JobState::Failed), 1, None).ok()?;
        let mut count = page.items.len();
        let mut cursor = page.next_cursor;
        while let Some(c) = cursor {
            let page = m
                .list(Some(JobState::Failed), MAX_LIST_LIMIT, Some(&c))
                .ok()?;
            count += page.items.len();
            cursor = page.next_cursor;
        }
        (count >= n).then_some(())
    })
    .await;
    host.stop().await;
}

/// VmRSS of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

async fn call(client: &Client, name: &'static str, args: Value) -> Value {
    let args = args.as_object().cloned().unwrap_or_default();
    let r = client
        .call_tool(CallToolRequestParams::new(name).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_ne!(r.is_error, Some(true), "{name}: {r:?}");
    r.structured_content.unwrap_or(Value::Null)
}

/// Lists every job, pages as large as allowed; returns how many.
async fn list_all(client: &Client) -> usize {
    let (mut seen, mut cursor) = (0, None::<String>);
    loop {
        let mut args = json!({ "limit": MAX_LIST_LIMIT });
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let page = call(client, "list_jobs", args).await;
        seen += page["jobs"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return seen;
        }
    }
}

async fn measure(
    scratch: &Path,
    data: &Path,
    scale: &Scale,
) -> Vec<(String, String, &'static str)> {
    let cmd = common::serve_command(data);
    let log = std::fs::File::create(scratch.join("serve.log")).expect("serve.log");
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(log)
        .spawn()
        .expect("spawn delegate-host serve");
    let pid = transport.id().expect("server pid");
    let client = ().serve(transport).await.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(scratch.join("serve.log")).unwrap_or_default();
        panic!("MCP over stdio did not start: {e}\n{log}")
    });
    let mut rows = Vec::new();

    // A full listing, warmed once, then timed.
    assert_eq!(list_all(&client).await, scale.jobs);
    let mut samples = Vec::with_capacity(scale.listings);
    for _ in 0..scale.listings {
        let t = Instant::now();
        list_all(&client).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    let pages = scale.jobs.div_ceil(MAX_LIST_LIMIT);
    rows.push((
        format!(
            "list_jobs, all {} jobs ({pages} pages of {MAX_LIST_LIMIT}), p50",
            scale.jobs
        ),
        format!("{:.2} ms", samples[samples.len() / 2].as_secs_f64() * 1e3),
        "< 3 ms (original: 6-7 ms)",
    ));
    rows.push((
        "  min".into(),
        format!("{:.2} ms", samples[0].as_secs_f64() * 1e3),
        "",
    ));

    // Bursts of concurrent status calls.
    let first = call(&client, "list_jobs", json!({ "limit": 1 })).await;
    let id = first["jobs"][0]["job_id"]
        .as_str()
        .expect("a job id")
        .to_string();
    let settle = Duration::from_secs(if scale.bursts > 2 { 3 } else { 0 });
    tokio::time::sleep(settle).await;
    rows.push(("RSS idle".into(), format!("{:.1} MiB", rss_mib(pid)), ""));
    for n in 1..=scale.bursts {
        let t = Instant::now();
        let calls =
            (0..scale.burst).map(|_| call(&client, "get_job_status", json!({ "job_id": id })));
        futures_util::future::join_all(calls).await;
        let took = t.elapsed();
        if n == 1 || n == scale.bursts {
            rows.push((
                format!("  burst {n}: {} concurrent get_job_status", scale.burst),
                format!("{:.0} ms", took.as_secs_f64() * 1e3),
                "",
            ));
            tokio::time::sleep(settle).await;
            rows.push((
                format!("RSS after {n} burst(s), {} s later", settle.as_secs()),
                format!("{:.1} MiB", rss_mib(pid)),
                "near idle (original report: 75 MB, staying)",
            ));
        }
    }
    let _ = client.cancel().await;
    rows
}
