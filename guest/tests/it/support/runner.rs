//! Helpers for tests that drive the real `delegate-guest` binary in
//! temporary directories.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::LONG;

/// The binary under test.
pub fn guest_bin() -> &'static str {
    env!("CARGO_BIN_EXE_delegate-guest")
}

/// The fake `claude` script.
pub fn fake_claude() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fake-claude")
}

/// The argv the fake `claude` recorded in `path` (its
/// `FAKE_CLAUDE_RECORD`: arguments NUL-separated).
pub fn recorded_argv(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).expect("a UTF-8 argument"))
        .collect()
}

/// A temporary directory the agent's user (`nobody` when tests run as
/// root) can traverse.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    /// Exit status of the runner.
    pub status: ExitStatus,
    /// Every stdout line, parsed.
    pub lines: Vec<Value>,
    /// stderr as text.
    pub stderr: String,
}

impl Finished {
    /// The exit code.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// The result line (the last line).
    pub fn result(&self) -> &Value {
        let last = self.lines.last().expect("no stdout lines");
        assert_eq!(
            last["type"], "result",
            "last line is not the result: {last}"
        );
        last
    }

    /// Events (all lines but the result).
    pub fn events(&self) -> &[Value] {
        &self.lines[..self.lines.len().saturating_sub(1)]
    }

    /// Events of one type.
    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.events().iter().filter(|e| e["type"] == t).collect()
    }

    /// The phases in order.
    pub fn phases(&self) -> Vec<String> {
        self.of_type("phase")
            .iter()
            .map(|e| e["phase"].as_str().unwrap().to_string())
            .collect()
    }

    /// All log chunk bytes of one stream, checking offsets are contiguous.
    pub fn log_bytes(&self, stream: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self
            .of_type("log")
            .into_iter()
            .filter(|e| e["stream"] == stream)
        {
            assert_eq!(
                e["offset"].as_u64().unwrap(),
                out.len() as u64,
                "gap or overlap at {e}"
            );
            match (e.get("text"), e.get("base64")) {
                (Some(Value::String(t)), None) => out.extend_from_slice(t.as_bytes()),
                (None, Some(Value::String(b))) => {
                    use base64::Engine as _;
                    out.extend(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                }
                _ => panic!("bad chunk {e}"),
            }
        }
        out
    }

    /// Panics with context unless the runner exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "stderr:\n{}\nresult: {:?}",
            self.stderr,
            self.lines.last()
        );
        self
    }
}

/// A job in a temporary directory: `dir/manifest.json`, `dir/ws`.
pub struct Job {
    /// The directory (kept alive with the job).
    pub dir: tempfile::TempDir,
    /// Extra arguments after the manifest.
    pub args: Vec<String>,
    /// Environment of the runner itself.
    pub env: Vec<(String, String)>,
    /// Run the runner through this prefix (e.g. setpriv).
    pub prefix: Vec<String>,
}

impl Job {
    /// Writes `manifest` and prepares `--workspace dir/ws`.
    pub fn new(manifest: &Value) -> Job {
        let dir = tempdir();
        std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
        let ws = dir.path().join("ws").display().to_string();
        Job {
            dir,
            args: vec!["--workspace".into(), ws],
            env: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// Adds runner arguments.
    pub fn arg(mut self, a: impl Into<String>) -> Job {
        self.args.push(a.into());
        self
    }

    /// Sets an environment variable of the runner.
    pub fn env(mut self, k: &str, v: &str) -> Job {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The workspace.
    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// The default log directory.
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("ws-logs")
    }

    /// A path inside the job directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Starts the runner.
    pub fn start(&self) -> Running {
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(guest_bin().into());
        argv.push("run".into());
        argv.push(self.dir.path().join("manifest.json").display().to_string());
        argv.extend(self.args.iter().cloned());
        let mut cmd = Command::new(&argv[0]);
        // A standalone run borrows these from its caller: the developer's
        // own must not change what a test sees.
        for name in delegate_guest::caller::CLAUDE_CREDENTIALS {
            cmd.env_remove(name);
        }
        cmd.args(&argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Running::spawn(cmd)
    }

    /// Runs to the end.
    pub fn run(&self) -> Finished {
        self.start().finish()
    }
}

/// A runner in progress; its stdout lines arrive on a channel.
pub struct Running {
    /// The child.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
    stderr: std::thread::JoinHandle<String>,
    peak_rss_kib: u64,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("cannot start delegate-guest");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let stderr =
            std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
            peak_rss_kib: 0,
        }
    }

    /// The runner's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads lines until one satisfies `pred`; returns it.
    pub fn wait_for_line(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LONG;
        loop {
            self.sample_rss();
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; saw {:?}",
                self.seen
            );
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(l) => {
                    let v: Value =
                        serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "stdout closed while waiting for {what}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for a phase event.
    pub fn wait_for_phase(&mut self, phase: &str) -> Value {
        self.wait_for_line(&format!("phase {phase}"), |v| {
            v["type"] == "phase" && v["phase"] == phase
        })
    }

    /// Peak RSS of the runner so far (KiB), from /proc.
    pub fn sample_rss(&mut self) -> u64 {
        let kib = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            });
        if let Some(kib) = kib {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
        self.peak_rss_kib
    }

    /// Sends a signal to the runner.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Reads everything and waits for the exit.
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + LONG;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let v: Value =
                        serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
                    self.seen.push(v);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline {
                        let _ = self.child.kill();
                        panic!("runner did not finish in time; saw {:?}", self.seen);
                    }
                }
            }
        }
        let status = self.child.wait().unwrap();
        Finished {
            status,
            lines: self.seen,
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}

/// Pids of live processes whose command line or environment contains
/// `marker` (zombies and this test process excluded).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let hit = ["cmdline", "environ"].iter().any(|f| {
            std::fs::read(format!("/proc/{pid}/{f}"))
                .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
        });
        if hit {
            found.push(pid);
        }
    }
    found
}

/// Polls `cond` until it holds or `within` passes.
pub fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A marker unique to this test run.
pub fn marker(name: &str) -> String {
    format!("dg-{name}-{}-{}", std::process::id(), fastish_rand())
}

fn fastish_rand() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}
