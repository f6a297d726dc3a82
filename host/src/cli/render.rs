//! Text for people: statuses, results, listings and settings, printed to
//! stdout. The JSON forms (`--json`) are the MCP tools' answers as they are.

use std::fmt::Write as _;

use serde::Serialize;

use crate::mcp::views::{ListView, ResultView, StatusView, TailView};

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("delegate-host: cannot encode JSON: {e}"),
    }
}

/// A job's status as aligned lines.
pub fn status(v: &StatusView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, val: &str| {
        let _ = writeln!(out, "{k:<11} {val}");
    };
    let mut state = v.status.to_string();
    if let Some(p) = &v.phase {
        state.push_str(&format!(" (phase {p}"));
        if let Some(pct) = v.progress {
            state.push_str(&format!(", {pct:.0}%"));
        }
        state.push(')');
    }
    line("job", &v.job_id);
    line("status", &state);
    if let Some(m) = &v.message {
        line("message", m);
    }
    if let Some(e) = &v.error {
        let kind = v
            .error_kind
            .as_deref()
            .map(|k| format!(" [{k}]"))
            .unwrap_or_default();
        line("error", &format!("{e}{kind}"));
    }
    line("agent", &format!("{}: {}", v.agent_type, v.task));
    line("created", &v.created_at);
    if let Some(t) = &v.started_at {
        line("started", t);
    }
    match &v.completed_at {
        Some(t) => line("completed", t),
        None => line("deadline", &v.deadline_at),
    }
    if let Some(age) = v.heartbeat_age_seconds {
        line("heartbeat", &format!("{age:.1} s ago"));
    }
    if let Some(vm) = &v.vm {
        let node = vm
            .node
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        let gone = if vm.destroyed { " (destroyed)" } else { "" };
        line("vm", &format!("{} {}{node}{gone}", vm.provider, vm.id));
    }
    line("isolation", &v.isolation.description);
    if let Some(r) = &v.recent_output {
        for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            if !text.is_empty() {
                let _ = writeln!(out, "recent {name}:");
                for l in text.lines() {
                    let _ = writeln!(out, "  | {l}");
                }
            }
        }
    }
    out
}

fn tail(out: &mut String, name: &str, t: &TailView) {
    if t.total_bytes == 0 {
        return;
    }
    let cut = if t.truncated {
        format!(", last {} bytes shown", t.text.len())
    } else {
        String::new()
    };
    let _ = writeln!(out, "--- {name} ({} bytes{cut})", t.total_bytes);
    out.push_str(&t.text);
    if !t.text.ends_with('\n') {
        out.push('\n');
    }
}

/// A finished job's result.
pub fn result(v: &ResultView, archive: Option<&std::path::Path>) -> String {
    let mut out = String::new();
    let mut head = format!("job {} {}", v.job_id, v.status);
    if let Some(code) = v.exit_code {
        head.push_str(&format!(", exit code {code}"));
    }
    if let Some(sig) = &v.signal {
        head.push_str(&format!(", killed by {sig}"));
    }
    if let Some(d) = v.duration_seconds {
        head.push_str(&format!(", {d:.1} s"));
    }
    let _ = writeln!(out, "{head}");
    if let Some(e) = &v.error {
        let _ = writeln!(out, "error: {e}");
    }
    if let Some(o) = &v.output {
        tail(&mut out, "stdout", &o.stdout);
        tail(&mut out, "stderr", &o.stderr);
    }
    if let Some(agent) = &v.agent_result
        && let Some(text) = agent.get("result").and_then(|r| r.as_str())
    {
        let _ = writeln!(out, "--- agent result\n{text}");
    }
    if !v.artifacts.is_empty() {
        let _ = writeln!(out, "--- artifacts");
        for a in &v.artifacts {
            let _ = writeln!(
                out,
                "{:>10}  {}  {}",
                a.size,
                &a.sha256[..a.sha256.len().min(12)],
                a.path
            );
        }
        if let Some(p) = archive {
            let _ = writeln!(out, "archive: {} (tar xzf to unpack)", p.display());
        }
    }
    out
}

/// A page of jobs as a table.
pub fn list(v: &ListView) -> String {
    let mut out = String::new();
    if v.jobs.is_empty() {
        out.push_str("no jobs\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<12}  {:<7}  {:<24}  TASK",
        "JOB", "STATUS", "AGENT", "CREATED"
    );
    for j in &v.jobs {
        let task: String = j.task.chars().take(60).collect();
        let _ = writeln!(
            out,
            "{:<36}  {:<12}  {:<7}  {:<24}  {task}",
            j.job_id, j.status, j.agent_type, j.created_at
        );
    }
    out
}

/// Settings as `NAME=value` lines, one a line, as the environment takes them.
pub fn settings(pairs: &[(&'static str, String)]) {
    for (name, value) in pairs {
        println!("{name}={value}");
    }
}
