//! Text for people: statuses, results and listings, for stdout.
//! The JSON forms (`--json`) are the MCP tools' answers as they are.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};

use super::when;
use crate::views::{ListView, ResultView, StatusView, TailView};

/// A time as written, and how long ago it was.
fn stamp(at: &str, now: DateTime<Utc>) -> String {
    format!("{at} ({})", when::ago(at, now))
}

/// A job's status as aligned lines.
pub fn status(v: &StatusView, now: DateTime<Utc>) -> String {
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
    line("created", &stamp(&v.created_at, now));
    if let Some(t) = &v.started_at {
        line("started", &stamp(t, now));
    }
    match &v.completed_at {
        Some(t) => line("completed", &stamp(t, now)),
        None => line("deadline", &stamp(&v.deadline_at, now)),
    }
    if let Some(age) = v.heartbeat_age_seconds {
        line("heartbeat", &format!("{age:.1} s ago"));
    }
    if let Some(e) = &v.egress {
        line(
            "egress",
            &format!("{} allowed, {} denied", e.allowed, e.denied),
        );
        for d in &e.last_denied {
            line("  denied", d);
        }
    }
    if let Some(vm) = &v.vm {
        let node = vm
            .node
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        let gone = if vm.destroyed { " (destroyed)" } else { "" };
        line("vm", &format!("{} {}{node}{gone}", vm.provider, vm.id));
        if let (Some(kind), Some(secs)) = (&vm.start, vm.start_seconds) {
            line(
                "start",
                &format!("{kind}, {secs:.1} s to a guest with its job"),
            );
        }
    }
    if let Some(sess) = &v.session {
        let turn = if sess.turn > 1 {
            format!("turn {} of job {}", sess.turn, sess.session_id)
        } else {
            format!("turn 1 of {}", sess.turns)
        };
        let kept = match &sess.kept_until {
            Some(until) => format!("VM kept until {}", stamp(until, now)),
            None => sess.note.clone(),
        };
        line("session", &format!("{turn}; {kept}"));
    }
    match &v.isolation.accelerator {
        Some(accel) => line(
            "isolation",
            &format!("{} ({})", v.isolation.description, accel.to_uppercase()),
        ),
        None => line("isolation", &v.isolation.description),
    }
    for w in &v.warnings {
        line("warning", w);
    }
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
    let mut out = ended(v);
    out.push('\n');
    out.push_str(&result_body(v, archive, true));
    out
}

/// A finished job's result after its output was shown as it ran: no
/// output tails, and how the job ended as the last line.
pub fn result_after_output(v: &ResultView, archive: Option<&std::path::Path>) -> String {
    let mut out = result_body(v, archive, false);
    out.push_str(&ended(v));
    out.push('\n');
    out
}

/// One line saying how a job ended: status, exit code or signal, run time.
pub fn ended(v: &ResultView) -> String {
    let mut head = format!("job {} {}", v.job_id, v.status);
    if let Some(code) = v.exit_code {
        head.push_str(&format!(", exit code {code}"));
    }
    if let Some(sig) = &v.signal {
        head.push_str(&format!(", killed by {sig}"));
    }
    if let Some(d) = v.duration_seconds {
        head.push_str(&format!(", took {}", when::duration(d)));
    }
    head
}

/// The result below its first line; `tails`: with the output's tails.
fn result_body(v: &ResultView, archive: Option<&std::path::Path>, tails: bool) -> String {
    let mut out = String::new();
    if let Some(e) = &v.error {
        let _ = writeln!(out, "error: {e}");
    }
    if let Some(o) = &v.output
        && tails
    {
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
    if let Some(p) = &v.patch {
        let _ = writeln!(out, "--- patch ({} files, {} bytes)", p.files.len(), p.size);
        for f in &p.files {
            let counts = match (f.added, f.removed) {
                (Some(a), Some(r)) => format!("+{a} -{r}"),
                _ => "binary".into(),
            };
            let _ = writeln!(out, "{:>12}  {:<8}  {}", counts, f.change, f.path);
        }
        let _ = writeln!(out, "{}", p.apply_hint);
    }
    out
}

/// Characters of a task shown in the `list` table.
const TASK_COLUMN: usize = 60;

/// A task on one line: whitespace runs (newlines of a script) become one
/// space and control characters go, so each job stays one table row.
fn one_line(task: &str) -> String {
    let words: Vec<&str> = task.split_whitespace().collect();
    let joined = words.join(" ");
    let mut shown: String = joined
        .chars()
        .filter(|c| !c.is_control())
        .take(TASK_COLUMN)
        .collect();
    if joined.chars().count() > TASK_COLUMN {
        shown.pop();
        shown.push('…');
    }
    shown
}

/// A page of jobs as a table; comfy-table sizes the columns by the display
/// width of what they hold.
pub fn list(v: &ListView, now: DateTime<Utc>) -> String {
    if v.jobs.is_empty() {
        return "no jobs\n".into();
    }
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(["JOB", "STATUS", "AGENT", "CREATED", "TASK"]);
    for j in &v.jobs {
        table.add_row([
            j.job_id.clone(),
            j.status.to_string(),
            j.agent_type.clone(),
            when::ago(&j.created_at, now),
            match &j.session {
                // Kept VMs and turns stand out in the listing.
                Some(sess) => format!("{}{}", session_mark(sess), one_line(&j.task)),
                None => one_line(&j.task),
            },
        ]);
    }
    for column in table.column_iter_mut() {
        // Two spaces between columns and none before the first.
        column.set_padding((0, 2));
        column.set_cell_alignment(CellAlignment::Left);
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut out = String::new();
    for row in table.lines() {
        let _ = writeln!(out, "{}", row.trim_end());
    }
    out
}

/// `[turn 2] `, `[kept until 12:30] `: a persistent job's mark in a listing.
fn session_mark(s: &crate::views::turns::SessionView) -> String {
    let mut marks = Vec::new();
    if s.turn > 1 {
        marks.push(format!("turn {}", s.turn));
    }
    if let Some(until) = &s.kept_until {
        let short = until.get(11..16).unwrap_or(until);
        marks.push(format!("VM kept until {short} UTC"));
    }
    if marks.is_empty() {
        String::new()
    } else {
        format!("[{}] ", marks.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use delegate_proto::JobState;

    use super::*;
    use crate::views::SummaryView;

    fn job(id: &str, status: JobState, agent: &str, task: &str) -> SummaryView {
        SummaryView {
            job_id: id.into(),
            status,
            agent_type: agent.into(),
            task: task.into(),
            created_at: "2026-03-01T11:58:00.000Z".into(),
            completed_at: None,
            session: None,
        }
    }

    #[test]
    fn a_status_shows_each_warning_on_its_own_line() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut view = StatusView {
            job_id: "a1".into(),
            status: JobState::Running,
            finished: false,
            phase: None,
            progress: None,
            message: None,
            error: None,
            error_kind: None,
            agent_type: "script".into(),
            task: "echo hi".into(),
            created_at: "2026-03-01T11:58:00.000Z".into(),
            started_at: None,
            completed_at: None,
            deadline_at: "2026-03-01T13:00:00.000Z".into(),
            heartbeat_age_seconds: None,
            vm: None,
            isolation: crate::views::IsolationView {
                kind: "vm".into(),
                description: "virtual machine".into(),
                accelerator: None,
            },
            warnings: Vec::new(),
            recent_output: None,
            egress: None,
            session: None,
        };
        assert!(!status(&view, now).contains("warning"));
        view.warnings = vec!["egress is not enforced by delegate: why".into()];
        let text = status(&view, now);
        assert!(
            text.lines()
                .any(|l| l == "warning     egress is not enforced by delegate: why"),
            "{text}"
        );
    }

    #[test]
    fn list_columns_line_up_whatever_their_contents() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let view = ListView {
            jobs: vec![
                job("a1", JobState::Provisioning, "claude", "fix\nthe   build"),
                job("b2222", JobState::Failed, "script", "naïve 日本語 task"),
                job("c3", JobState::Cancelled, "custom", &"x".repeat(100)),
            ],
            next_cursor: None,
        };
        let text = list(&view, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let column = |line: &str, word: &str| line.find(word).map(|i| line[..i].chars().count());
        let status_at = column(lines[0], "STATUS").unwrap();
        let agent_at = column(lines[0], "AGENT").unwrap();
        let created_at = column(lines[0], "CREATED").unwrap();
        for (line, status, agent) in [
            (lines[1], "provisioning", "claude"),
            (lines[2], "failed", "script"),
            (lines[3], "cancelled", "custom"),
        ] {
            assert_eq!(column(line, status), Some(status_at), "{text}");
            assert_eq!(column(line, agent), Some(agent_at), "{text}");
            assert_eq!(column(line, "2 min ago"), Some(created_at), "{text}");
        }
        assert!(lines[1].ends_with("fix the build"), "{text}");
        assert!(
            lines[3].ends_with('…') && !lines[3].contains(&"x".repeat(60)),
            "{text}"
        );
    }
}
