//! The command line as a person (or a script) uses it, through real
//! `delegate-host` processes: plain output through pipes, `serve` at a
//! pseudo-terminal (`script`) for Ctrl-C. No server runs for the job
//! commands, so jobs stay pending unless a test cancels them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use delegate_host::mcp::tools;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_delegate-host");

/// A data directory of its own and nothing from the caller's environment.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.program(BIN, args)
    }

    /// Any program, with this environment.
    fn program(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("DELEGATE_DATA_DIR", self.dir.path().join("data"))
            .env("DELEGATE_PROVIDER", "local")
            .env("CALLBACK_HOST", "127.0.0.1")
            .env("CALLBACK_PORT", "0")
            .current_dir(self.dir.path());
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run delegate-host");
        Run::from(args, out)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Submits a script job; returns its id (the one line `-q` prints).
    fn submit(&self, task: &str) -> String {
        let manifest = serde_json::json!({"task": task, "agentType": "script"});
        let path = self.file("job.json", &manifest.to_string());
        let run = self.run(&["submit", "-q", path.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(run.stderr, "", "--quiet prints nothing else: {run}");
        let id = run.stdout.trim_end_matches('\n');
        assert_eq!(id.len(), 36, "{run}");
        assert!(!id.contains('\n'), "{run}");
        id.to_string()
    }
}

struct Run {
    args: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(args: &[&str], out: Output) -> Run {
        Run {
            args: args.join(" "),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`delegate-host {}` exited {}\n--- stdout\n{}--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// Nothing the command line says names an MCP tool.
fn no_tool_names(run: &Run) {
    for tool in tools::all().iter() {
        let name = tool.name.as_ref();
        assert!(
            !run.stdout.contains(name) && !run.stderr.contains(name),
            "{name} in {run}"
        );
    }
}

/// Validates `value` against the output schema of `tool`.
fn matches_output_schema(tool: &str, value: &Value) {
    let tool = tools::get(tool).expect("tool");
    let schema = Value::Object(tool.output_schema.expect("output schema").as_ref().clone());
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{}: {errors:?}\n{value:#}", tool.name);
}

#[test]
fn job_ids_are_taken_by_unique_prefix() {
    let env = Env::new();
    // 17 ids over 16 hex digits: two of them share their first character.
    let ids: Vec<String> = (0..17).map(|i| env.submit(&format!("echo {i}"))).collect();
    let mut by_first: HashMap<char, Vec<&String>> = HashMap::new();
    for id in &ids {
        by_first
            .entry(id.chars().next().unwrap())
            .or_default()
            .push(id);
    }
    let shared = by_first.values().find(|v| v.len() > 1).expect("pigeonhole");
    let prefix = &shared[0][..1];

    let ambiguous = env.run(&["status", prefix]);
    assert_eq!(ambiguous.code, 2, "{ambiguous}");
    for id in shared {
        assert!(ambiguous.stderr.contains(id.as_str()), "{ambiguous}");
    }
    assert!(ambiguous.stderr.contains("give more"), "{ambiguous}");

    // The shortest prefix that names one job works for every job command.
    let id = &ids[3];
    let unique = (1..=id.len())
        .map(|n| &id[..n])
        .find(|p| ids.iter().filter(|other| other.starts_with(p)).count() == 1)
        .unwrap();
    let status = env.run(&["status", unique, "--json"]);
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(status.json()["job_id"], id.as_str());
    let quiet = env.run(&["status", "-q", unique]);
    assert_eq!(quiet.stdout, format!("{id}\n"), "{quiet}");
    let cancel = env.run(&["cancel", "-q", unique]);
    assert_eq!(cancel.stdout, format!("{id}\n"), "{cancel}");
    let result = env.run(&["result", unique]);
    assert_eq!(result.code, 130, "cancelled: {result}");

    let missing = env.run(&["logs", "zz"]);
    assert_eq!(missing.code, 4, "{missing}");
    assert!(missing.stderr.contains("delegate-host list"), "{missing}");
    no_tool_names(&missing);
    let empty = env.run(&["status", ""]);
    assert_eq!(empty.code, 2, "{empty}");
}

#[test]
fn usage_and_file_errors_exit_2_and_say_what_is_wrong() {
    let env = Env::new();
    let nope = env.run(&["submit", "nope.json"]);
    assert_eq!(nope.code, 2, "{nope}");
    assert!(nope.stderr.contains("nope.json"), "{nope}");
    assert!(!nope.stderr.to_lowercase().contains("job"), "{nope}");

    for limit in ["0", "1001", "many"] {
        let bad = env.run(&["list", "--limit", limit]);
        assert_eq!(bad.code, 2, "{bad}");
        assert!(bad.stderr.contains("1 to 1000"), "{bad}");
    }
    assert_eq!(env.run(&["list", "--limit", "1000"]).code, 0);
    let cursor = env.run(&["list", "--cursor", "nonsense"]);
    assert_eq!(cursor.code, 2, "{cursor}");
    no_tool_names(&cursor);
    assert_eq!(env.run(&["no-such-command"]).code, 2);

    let array = env.file("array.json", "[]");
    let run = env.run(&["submit", array.to_str().unwrap()]);
    assert_eq!(run.code, 5, "{run}");
    assert!(run.stderr.contains("a manifest is a JSON object"), "{run}");
    assert!(!run.stderr.contains("invalid type"), "{run}");

    let mut piped = env
        .command(&["submit", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"task\": ")
        .unwrap();
    let run = Run::from(&["submit", "-"], piped.wait_with_output().unwrap());
    assert_eq!(run.code, 5, "{run}");
    assert!(
        run.stderr.contains("<stdin>: not valid JSON at line 1"),
        "{run}"
    );

    let broken = env.file(
        "broken.json",
        "{\n  \"task\": \"x\",\n  \"agentType\": script\n}\n",
    );
    let run = env.run(&["submit", broken.to_str().unwrap()]);
    assert_eq!(run.code, 5, "{run}");
    assert!(run.stderr.contains("line 3, column 16"), "{run}");

    // "4GB" is documented as 4 GiB (binary units), so it is accepted...
    let gb = env.file(
        "gb.json",
        r#"{"task": "x", "agentType": "script", "resources": {"memory": "4GB"}}"#,
    );
    let run = env.run(&["submit", gb.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 0, "{run}");
    // ...and what is not a size is refused with how to write one.
    let gigs = env.file(
        "gigs.json",
        r#"{"task": "x", "agentType": "script", "resources": {"memory": "4 gigs"}}"#,
    );
    let run = env.run(&["submit", gigs.to_str().unwrap()]);
    assert_eq!(run.code, 5, "{run}");
    assert!(
        run.stderr.contains("resources.memory") && run.stderr.contains("binary"),
        "{run}"
    );

    let id = env.submit("sleep 1");
    let early = env.run(&["result", &id]);
    assert_eq!(early.code, 6, "{early}");
    assert!(
        early.stderr.contains(&format!("delegate-host wait {id}")),
        "{early}"
    );
    no_tool_names(&early);
}

#[test]
fn every_job_command_prints_json_and_ids_only_on_request() {
    let env = Env::new();
    let manifest = env.file("m.json", r#"{"task": "echo hi", "agentType": "script"}"#);
    let submitted = env.run(&["submit", manifest.to_str().unwrap(), "--json"]);
    assert_eq!(submitted.code, 0, "{submitted}");
    matches_output_schema(tools::name::SUBMIT_JOB, &submitted.json());
    let id = submitted.json()["job_id"].as_str().unwrap().to_string();

    let status = env.run(&["status", &id, "--json"]);
    matches_output_schema(tools::name::GET_JOB_STATUS, &status.json());
    let list = env.run(&["list", "--json"]);
    matches_output_schema(tools::name::LIST_JOBS, &list.json());
    let logs = env.run(&["logs", &id, "--json"]);
    matches_output_schema(tools::name::GET_JOB_LOGS, &logs.json());
    let cancel = env.run(&["cancel", &id, "--json"]);
    matches_output_schema(tools::name::CANCEL_JOB, &cancel.json());
    assert_eq!(cancel.json()["cancelled"], true);
    let result = env.run(&["result", &id, "--json"]);
    assert_eq!(result.code, 130, "{result}");
    matches_output_schema(tools::name::GET_JOB_RESULT, &result.json());
    let waited = env.run(&["wait", &id, "--json"]);
    assert_eq!(waited.code, 130, "the job's code: {waited}");
    assert_eq!(waited.json()["status"], "cancelled");

    let waited = env.run(&["wait", "-q", &id]);
    assert_eq!(
        (waited.code, waited.stdout.as_str()),
        (130, format!("{id}\n").as_str())
    );
    let other = env.submit("echo other");
    let list = env.run(&["list", "-q"]);
    assert_eq!(list.stdout, format!("{other}\n{id}\n"), "{list}");
    let pending = env.run(&["list", "-q", "--status", "pending"]);
    assert_eq!(pending.stdout, format!("{other}\n"), "{pending}");
    // docker's words work too, without a second entry in --help.
    assert_eq!(env.run(&["ps", "-q"]).stdout, list.stdout);
    assert_eq!(env.run(&["ls", "-q"]).stdout, list.stdout);

    let config = env.run(&["config", "--json"]);
    assert_eq!(
        config.json()["settings"]["DELEGATE_PROVIDER"]["value"],
        "local",
        "{config}"
    );
    let doctor = env.run(&["doctor", "--json"]);
    assert!(doctor.json()["ok"].is_boolean(), "{doctor}");
    assert!(doctor.json()["checks"].is_array(), "{doctor}");
    assert_eq!(env.run(&["status", &id, "--json", "-q"]).code, 2);
}

#[test]
fn the_list_table_lines_up_and_reads_times_as_people_do() {
    let env = Env::new();
    env.submit("plain");
    env.submit("naïve 日本語\nsecond line of a script");
    let cancelled = env.submit("to cancel");
    assert_eq!(env.run(&["cancel", &cancelled]).code, 0);
    let list = env.run(&["list"]);
    assert_eq!(list.code, 0, "{list}");
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    let at = |line: &str, word: &str| line.find(word).map(|i| line[..i].chars().count());
    let header = lines[0];
    let (status, agent, created) = (
        at(header, "STATUS"),
        at(header, "AGENT"),
        at(header, "CREATED").unwrap(),
    );
    for (line, state) in lines[1..].iter().zip(["cancelled", "pending", "pending"]) {
        assert_eq!(at(line, state), status, "{list}");
        assert_eq!(at(line, "script"), agent, "{list}");
        // "just now", or "N s ago" on a slow machine.
        let age: String = line.chars().skip(created).collect();
        assert!(
            age.starts_with("just now") || age.split(' ').nth(1) == Some("s"),
            "{list}"
        );
    }
    // The task's first line (what the store keeps as its summary).
    assert!(lines[2].ends_with("naïve 日本語"), "{list}");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let env = Env::new();
    let id = env.submit("echo hi");
    for args in [vec!["status", id.as_str()], vec!["list"], vec!["man"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = env
            .command(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let run = Run::from(&args, out);
        assert!(!run.stderr.contains("panicked"), "{run}");
        assert_eq!(run.stderr, "", "{run}");
        assert_eq!(run.code, 141, "{run}");
    }
}

#[test]
fn ctrl_c_on_serve_at_a_terminal_exits_at_once() {
    let env = Env::new();
    // `script` gives `serve` a terminal for stdin and stdout; a ^C typed
    // into it reaches `serve` as SIGINT, as from a person's keyboard.
    let shell_command = format!("exec '{BIN}' serve");
    let mut child = env
        .program("script", &["-qec", &shell_command, "/dev/null"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("serving MCP on stdio") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not start:\n{seen}");
        }
        seen.push_str(&line);
    }
    // Let the session sit in its read of the terminal, where a person's
    // Ctrl-C finds it.
    std::thread::sleep(Duration::from_secs(1));
    let pressed = Instant::now();
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if pressed.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("serve still runs 10 s after Ctrl-C:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = pressed.elapsed();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    seen.push_str(&rest);
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{seen}");
    assert_eq!(status.code(), Some(0), "{seen}");
    assert!(!seen.contains("could not start"), "{seen}");
}

#[test]
fn wait_redraws_its_line_only_on_a_terminal() {
    let env = Env::new();
    let id = env.submit("echo hi");
    assert_eq!(env.run(&["cancel", &id]).code, 0);

    let piped = env.run(&["wait", &id]);
    assert_eq!(piped.code, 130, "{piped}");
    assert!(
        !piped.stderr.contains('\x1b'),
        "no escapes in a pipe: {piped}"
    );
    assert!(piped.stdout.contains("cancelled"), "{piped}");

    let shell_command = format!("exec '{BIN}' wait {id}");
    let out = env
        .program("script", &["-qec", &shell_command, "/dev/null"])
        // A terminal names its type; without one (or with `dumb`) nothing is redrawn.
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{screen}");
    assert!(
        screen.contains("\r\x1b[2K"),
        "the line is redrawn: {screen:?}"
    );
    assert!(screen.contains("cancelled"), "{screen}");
}

#[test]
fn completions_and_man_pages_come_from_the_definitions() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = env.run(&["completions", shell]);
        assert_eq!(run.code, 0, "{run}");
        for word in ["delegate-host", "submit", "wait", "quiet", "provisioning"] {
            assert!(run.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    let man = env.run(&["man"]);
    assert_eq!(man.code, 0, "{man}");
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH delegate-host 1"));
    assert!(man.stdout.contains("submit"), "{man}");
    let dir = env.dir.path().join("man1");
    let run = env.run(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run}");
    for page in [
        "delegate-host.1",
        "delegate-host-wait.1",
        "delegate-host-list.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let blocked = env.file("file", "");
    let run = env.run(&["man", "--dir", blocked.join("sub").to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run}");
}

#[test]
fn help_groups_the_commands_by_topic() {
    let env = Env::new();
    let help = env.run(&["--help"]);
    assert_eq!(help.code, 0, "{help}");
    let topics = ["Jobs:", "Server:", "Setup:", "Settings"];
    let at: Vec<usize> = topics
        .iter()
        .map(|t| {
            help.stdout
                .find(t)
                .unwrap_or_else(|| panic!("{t} in {help}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{help}");
    let jobs = &help.stdout[at[0]..at[1]];
    for command in [
        "submit", "wait", "status", "logs", "result", "cancel", "list",
    ] {
        assert!(
            jobs.contains(&format!("\n  {command} ")),
            "{command} in {jobs}"
        );
    }
    assert!(help.stdout[at[1]..at[2]].contains("serve"), "{help}");
    // Each command is listed once: no second, ungrouped "Commands:" list.
    assert!(!help.stdout.contains("Commands:"), "{help}");
    let wait = env.run(&["wait", "--help"]);
    assert!(
        wait.stdout.contains("Output:") && wait.stdout.contains("--quiet"),
        "{wait}"
    );
}

#[test]
fn a_secret_written_into_the_task_is_never_shown_or_kept() {
    const SECRET: &str = "early-secret-XYZ123";
    let env = Env::new();
    let manifest = serde_json::json!({
        "task": format!("echo {SECRET}"),
        "agentType": "script",
        "env": {"K": SECRET},
        "secrets": ["K"],
    });
    let path = env.file("secret.json", &manifest.to_string());
    let submitted = env.run(&["submit", "-q", path.to_str().unwrap()]);
    assert_eq!(submitted.code, 0, "{submitted}");
    let id = submitted.stdout.trim().to_string();
    let shows = |when: &str| {
        for args in [
            vec!["list"],
            vec!["list", "--json"],
            vec!["status", &id],
            vec!["status", &id, "--json"],
        ] {
            let run = env.run(&args);
            assert!(!run.stdout.contains(SECRET), "{when}: {run}");
            assert!(run.stdout.contains("***"), "{when}: {run}");
        }
    };
    shows("pending");
    let cancel = env.run(&["cancel", &id]);
    assert_eq!(cancel.code, 0, "{cancel}");
    // Final: the stored manifest no longer holds the secret's value, and
    // the task still must not show it.
    shows("cancelled");
    let waited = env.run(&["wait", &id, "--json"]);
    assert!(!waited.stdout.contains(SECRET), "{waited}");
    let db = rusqlite::Connection::open(env.dir.path().join("data/delegate.db")).unwrap();
    let (summary, stored): (String, String) = db
        .query_row(
            "SELECT task_summary, manifest FROM jobs WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(summary, "echo ***");
    assert!(!stored.contains(SECRET), "{stored}");
}
