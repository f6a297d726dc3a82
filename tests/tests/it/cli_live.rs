//! Following a job from the command line as a person does: `submit --wait`
//! and `logs --follow` print the job's output as it is written (stdout and
//! stderr in the order written) and end with how the job ended; a job in
//! the default `statusMode` still has its output in `logs` and `status`
//! while it runs; a job no engine runs is reported rather than waited on
//! forever. Plain output through pipes, the live display at a
//! pseudo-terminal (`script`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use delegate_tests::bins::bins;
use delegate_tests::mcp::{HostEnv, HttpHost, write_file};
use tokio::io::{AsyncBufReadExt, BufReader};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn quiet_env() -> HostEnv {
    let mut env = HostEnv::new();
    env.set("RUST_LOG", "warn");
    env
}

fn manifest(env: &HostEnv, task: &str) -> PathBuf {
    let body = serde_json::json!({"task": task, "agentType": "script"}).to_string();
    write_file(env.dir.path(), "m.json", &body)
}

#[tokio::test]
async fn submit_wait_prints_the_output_as_it_comes_and_how_the_job_ended() {
    let env = quiet_env();
    // The default statusMode (detailed): the output reaches the host anyway.
    let m = manifest(
        &env,
        "echo out1; sleep 0.5; echo err1 >&2; sleep 0.5; echo out2; sleep 4; echo last",
    );
    let mut child = env
        .command(&["submit", m.to_str().unwrap(), "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run delegate-host");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let mut out2_at = None;
    let read_all = async {
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            if line == "out2" {
                out2_at = Some(Instant::now());
            }
            lines.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read_all)
        .await
        .expect("submit --wait did not finish");
    let ended_at = Instant::now();
    let out = child.wait_with_output().await.expect("wait");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{lines:?}\n{stderr}");
    // Live: `out2` was printed while the job still slept, not at its end.
    let out2_at = out2_at.unwrap_or_else(|| panic!("no out2 in {lines:?}"));
    assert!(
        ended_at - out2_at > Duration::from_secs(2),
        "out2 arrived only {:?} before the end: {lines:?}",
        ended_at - out2_at
    );
    // Both streams, in the order written, each once (no tails repeated).
    let output: Vec<&str> = lines.iter().map(String::as_str).take(4).collect();
    assert_eq!(output, ["out1", "err1", "out2", "last"], "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| *l == "out1").count(),
        1,
        "{lines:?}"
    );
    // The last line says how the job ended.
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("job ") && last.contains("success, exit code 0, took"),
        "{lines:?}"
    );
    // A pipe gets plain lines: no redrawing.
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert!(stderr.contains("running"), "{stderr}");
}

#[tokio::test]
async fn at_a_terminal_the_status_line_stays_below_the_output() {
    let env = quiet_env();
    let m = manifest(
        &env,
        "echo one; sleep 1.5; printf 'two'; sleep 1; echo ' halves'",
    );
    let shell = format!(
        "exec '{}' submit '{}' --wait",
        bins().host.display(),
        m.display()
    );
    // `script` runs the command at a terminal, with this env's settings.
    let settings = env.command(&[]);
    let mut script = tokio::process::Command::new("script");
    script
        .args(["-qec", &shell, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // A terminal names its type; without one (or with `dumb`) nothing is redrawn.
        .env("TERM", "xterm")
        .envs(
            settings
                .as_std()
                .get_envs()
                .filter_map(|(k, v)| Some((k, v?))),
        )
        .stdin(Stdio::null());
    let out = script.output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("script did not finish")
        .expect("run script (util-linux)");
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen:?}");
    // The status line is redrawn in place ...
    assert!(screen.contains("\r\x1b[2K"), "{screen:?}");
    // ... cleared before output is printed, and output comes in whole
    // lines: the line written in two pieces is never split by it.
    assert!(screen.contains("\r\x1b[2Kone\r\n"), "{screen:?}");
    assert!(screen.contains("\r\x1b[2Ktwo halves\r\n"), "{screen:?}");
    assert!(screen.contains("success, exit code 0"), "{screen:?}");
}

#[tokio::test]
async fn a_default_mode_job_shows_its_output_while_it_runs() {
    let mut env = quiet_env();
    let server = HttpHost::start(&mut env).await;
    let m = manifest(&env, "echo early; echo problem >&2; sleep 60");
    let out = env.output(&["submit", m.to_str().unwrap(), "-q"]).await;
    let id = text(&out.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = text(&env.output(&["status", &id]).await.stdout);
        if status.contains("status      running") && status.contains("  | early") {
            assert!(status.contains("  | problem"), "{status}");
            assert!(
                !status.contains("not running"),
                "a server runs it: {status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no recent output: {status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // stdout and stderr are separate pipes: the combined log has both
    // lines, in the order the guest read them.
    let logs = env.output(&["logs", &id]).await;
    assert_eq!(sorted_lines(&text(&logs.stdout)), ["early", "problem"]);
    // The follower sees the end when another command cancels the job.
    let follow = env
        .command(&["logs", &id, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs --follow");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.output(&["cancel", &id]).await.status.code(), Some(0));
    let followed = tokio::time::timeout(Duration::from_secs(60), follow.wait_with_output())
        .await
        .expect("logs --follow did not end")
        .expect("logs --follow");
    let stderr = text(&followed.stderr);
    assert_eq!(followed.status.code(), Some(130), "{stderr}");
    assert_eq!(sorted_lines(&text(&followed.stdout)), ["early", "problem"]);
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .contains(&format!("job {id} cancelled")),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_an_engine_follow_says_so_and_status_and_list_show_it() {
    let env = quiet_env();
    let m = manifest(&env, "echo never");
    let id = text(
        &env.output(&["submit", m.to_str().unwrap(), "-q"])
            .await
            .stdout,
    )
    .trim()
    .to_string();
    let started = Instant::now();
    let follow = env.output(&["logs", &id, "--follow"]).await;
    let stderr = text(&follow.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
    assert_eq!(follow.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("nothing runs it"), "{stderr}");
    assert!(stderr.contains("delegate-host serve"), "{stderr}");

    let status = text(&env.output(&["status", &id]).await.stdout);
    assert!(status.contains("engine      not running"), "{status}");
    let list = env.output(&["list"]).await;
    assert!(
        text(&list.stderr).contains("no engine is running"),
        "{}",
        text(&list.stderr)
    );
    // Once final, nothing is waiting for an engine.
    assert_eq!(env.output(&["cancel", &id]).await.status.code(), Some(0));
    let status = text(&env.output(&["status", &id]).await.stdout);
    assert!(!status.contains("not running"), "{status}");
    let list = env.output(&["list"]).await;
    assert!(
        !text(&list.stderr).contains("no engine"),
        "{}",
        text(&list.stderr)
    );
}

/// The lines of `text`, sorted: for output of two streams, whose relative
/// order is the order the guest happened to read them in.
fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}
