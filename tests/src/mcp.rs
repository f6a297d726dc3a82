//! Driving the real `delegate-host serve` with the real rmcp client, over
//! stdio (a child process) or streamable HTTP (a child listening on
//! 127.0.0.1 port 0), in the current protocol revision (2026-07-28:
//! `server/discover`, per-request `_meta`) or an older one (2025-06-18:
//! `initialize`).
//!
//! Every host gets its own temporary data directory and a callback API on a
//! free loopback port; its stderr goes to `host.log` in that directory and
//! is printed when a test fails to make sense of, so failures explain
//! themselves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam, ProtocolVersion, ResourceUpdatedNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

use crate::bins::bins;

/// Which MCP revision the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2026-07-28: no `initialize`; `server/discover` and per-request metadata.
    Current,
    /// 2025-06-18: the `initialize` handshake and sessions.
    Legacy,
}

impl Revision {
    /// Both, for tests that must pass in each.
    pub const BOTH: [Revision; 2] = [Revision::Current, Revision::Legacy];

    fn lifecycle(self) -> ClientLifecycleMode {
        match self {
            Revision::Current => ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
            Revision::Legacy => ClientLifecycleMode::Initialize,
        }
    }

    /// The version the server should have agreed to.
    pub fn version(self) -> ProtocolVersion {
        match self {
            Revision::Current => ProtocolVersion::V_2026_07_28,
            Revision::Legacy => ProtocolVersion::V_2025_06_18,
        }
    }
}

/// Environment variables of the host's settings; the parent's are dropped
/// so a developer's shell cannot change what a test sees.
const SETTING_PREFIXES: &[&str] = &[
    "DELEGATE_",
    "CALLBACK_",
    "DEFAULT_",
    "HEARTBEAT_",
    "CLEANUP_",
    "PROXMOX_",
    "PVE_",
];

/// A host's configuration and its scratch directory.
pub struct HostEnv {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    /// The uid and gid hosts run as, when not the test's own.
    run_as: Option<(u32, u32)>,
    /// `RLIMIT_NOFILE` (soft and hard) hosts start under, through `prlimit`.
    nofile: Option<u64>,
}

impl Default for HostEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl HostEnv {
    /// A fresh data directory, the local provider, a free callback port.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = HostEnv {
            dir,
            vars: Vec::new(),
            run_as: None,
            nofile: None,
        };
        let data = env.data_dir();
        env.set("DELEGATE_DATA_DIR", data.display().to_string());
        // No configuration file of the person running the tests.
        let config_home = env.dir.path().join("config");
        env.set("XDG_CONFIG_HOME", config_home.display().to_string());
        env.set("DELEGATE_PROVIDER", "local");
        env.set("DELEGATE_GUEST_BIN", bins().guest.display().to_string());
        env.set("CALLBACK_HOST", "127.0.0.1");
        env.set("CALLBACK_PORT", "0");
        env.set("DELEGATE_HEARTBEAT_INTERVAL_SECONDS", "1");
        env.set("DELEGATE_CANCEL_GRACE_SECONDS", "3");
        env.set("RUST_LOG", "info,delegate_host=debug");
        env
    }

    /// Sets (or replaces) a variable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.into()));
        self
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where hosts started from this env write their stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("host.log")
    }

    /// The host's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `delegate-host ARGS` with this environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = match self.nofile {
            // prlimit execs the host: the pid stays the host's.
            Some(n) => {
                let mut c = tokio::process::Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(&bins().host);
                c
            }
            None => tokio::process::Command::new(&bins().host),
        };
        cmd.args(args);
        for (key, _) in std::env::vars() {
            if SETTING_PREFIXES.iter().any(|p| key.starts_with(p)) || key == "RUST_LOG" {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `delegate-host args` to its end (at most 180 s) with no
    /// stdin: its exit status and output.
    pub async fn output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tokio::time::timeout(Duration::from_secs(180), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("delegate-host {args:?} did not finish"))
            .expect("run delegate-host")
    }

    /// Makes hosts started from this env run as `uid`/`gid` (the test must
    /// be root): the data directory becomes theirs and the scratch
    /// directory traversable, as for a host run by an ordinary user.
    pub fn run_as(&mut self, uid: u32, gid: u32) -> &mut Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod the scratch directory");
        let data = self.data_dir();
        std::fs::create_dir_all(&data).expect("create the data directory");
        std::os::unix::fs::chown(&data, Some(uid), Some(gid)).expect("chown the data directory");
        self.run_as = Some((uid, gid));
        self
    }

    /// Makes hosts started from this env run under an open-file limit of
    /// `n` (soft and hard, as `ulimit -n` in a fresh shell), set by
    /// util-linux's `prlimit`.
    pub fn limit_open_files(&mut self, n: u64) -> &mut Self {
        self.nofile = Some(n);
        self
    }

    fn stderr_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open host.log")
    }
}

/// What the server sent the client on its own.
#[derive(Clone, Default)]
pub struct Recorder {
    info: Arc<Mutex<Option<ClientConfig>>>,
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    updated: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Recorder {
    fn with(config: ClientConfig) -> Self {
        let r = Recorder::default();
        *r.info.lock().unwrap() = Some(config);
        r
    }

    /// Progress notifications received so far.
    pub fn progress(&self) -> Vec<ProgressNotificationParam> {
        self.progress.lock().unwrap().clone()
    }

    /// URIs of `notifications/resources/updated` received so far.
    pub fn updated(&self) -> Vec<String> {
        self.updated.lock().unwrap().clone()
    }

    /// Waits until `uri` was reported updated, or panics after `limit`.
    pub async fn wait_updated(&self, uri: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if self.updated().iter().any(|u| u == uri) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no resources/updated for {uri} within {limit:?}; got {:?}",
                self.updated()
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
        self.changed.notify_waiters();
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.updated.lock().unwrap().push(params.uri);
        self.changed.notify_waiters();
    }

    fn get_info(&self) -> ClientConfig {
        self.info.lock().unwrap().clone().unwrap_or_default()
    }
}

/// Client options.
#[derive(Debug, Clone, Copy)]
pub struct ClientOpts {
    /// The revision.
    pub revision: Revision,
    /// Whether to declare the tasks extension.
    pub tasks: bool,
}

impl From<Revision> for ClientOpts {
    fn from(revision: Revision) -> Self {
        ClientOpts {
            revision,
            tasks: false,
        }
    }
}

fn client_config(opts: ClientOpts) -> ClientConfig {
    let caps = if opts.tasks {
        ClientCapabilities::builder().enable_tasks().build()
    } else {
        ClientCapabilities::default()
    };
    let config = ClientConfig::new(caps, Implementation::new("delegate-tests", "0.1.0"));
    match opts.revision {
        Revision::Legacy => config.with_protocol_version(ProtocolVersion::V_2025_06_18),
        Revision::Current => config,
    }
}

/// A connected client.
pub struct Client {
    /// The rmcp client service.
    pub service: RunningService<RoleClient, Recorder>,
    /// What the server sent on its own.
    pub recorder: Recorder,
    /// The revision in use.
    pub revision: Revision,
    /// The server's pid, for a stdio child.
    pub server_pid: Option<u32>,
}

/// Serves MCP on stdio as a child process of the test and connects to it.
pub async fn connect_stdio(env: &HostEnv, opts: impl Into<ClientOpts>) -> Client {
    let opts = opts.into();
    let cmd = env.command(&["serve"]);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(env.stderr_file())
        .spawn()
        .expect("spawn delegate-host serve");
    let server_pid = transport.id();
    let recorder = Recorder::with(client_config(opts));
    let service = recorder
        .clone()
        .serve_with_lifecycle(transport, opts.revision.lifecycle())
        .await
        .unwrap_or_else(|e| panic!("MCP over stdio did not start: {e}\n{}", env.log()));
    Client {
        service,
        recorder,
        revision: opts.revision,
        server_pid,
    }
}

/// A `delegate-host serve --http` child.
pub struct HttpHost {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// The bearer token it requires.
    pub token: String,
}

/// The token HTTP hosts in tests use.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

impl HttpHost {
    /// Starts `serve --http 127.0.0.1:0` and waits for its address.
    pub async fn start(env: &mut HostEnv) -> HttpHost {
        env.set("DELEGATE_HTTP_TOKEN", TEST_TOKEN);
        let mut cmd = env.command(&["serve", "--http", "127.0.0.1:0"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn delegate-host serve --http");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut log = env.stderr_file();
        let marker = "MCP over streamable HTTP at ";
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                if let Some(at) = line.find(marker) {
                    return Some(line[at + marker.len()..].trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("delegate-host serve --http did not start\n{}", env.log()));
        // Keep copying its stderr to host.log.
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
            }
        });
        HttpHost {
            child,
            url,
            token: TEST_TOKEN.to_string(),
        }
    }

    /// Connects an rmcp client with the token.
    pub async fn connect(&self, opts: impl Into<ClientOpts>) -> Client {
        let opts = opts.into();
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(self.url.clone())
                .auth_header(self.token.clone()),
        );
        let recorder = Recorder::with(client_config(opts));
        let service = recorder
            .clone()
            .serve_with_lifecycle(transport, opts.revision.lifecycle())
            .await
            .unwrap_or_else(|e| panic!("MCP over HTTP did not start: {e}"));
        Client {
            service,
            recorder,
            revision: opts.revision,
            server_pid: None,
        }
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Stops the server with SIGTERM and waits for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

impl Client {
    /// Calls a tool.
    pub async fn call(&self, name: &str, args: Value) -> CallToolResult {
        let args = args.as_object().cloned().unwrap_or_default();
        self.service
            .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
            .await
            .unwrap_or_else(|e| panic!("{name} failed at the protocol level: {e}"))
    }

    /// Calls a tool that must succeed; returns its structured content,
    /// checking that the text content carries the same JSON.
    pub async fn ok(&self, name: &str, args: Value) -> Value {
        let r = self.call(name, args).await;
        let text = text_of(&r);
        assert_ne!(
            r.is_error,
            Some(true),
            "{name} returned a tool error: {text}"
        );
        let structured = r
            .structured_content
            .clone()
            .unwrap_or_else(|| panic!("{name} returned no structured content: {text}"));
        let from_text: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}'s text is not JSON ({e}): {text}"));
        assert_eq!(
            from_text, structured,
            "{name}: text and structured content differ"
        );
        structured
    }

    /// Calls a tool that must fail with a tool error; returns its text.
    pub async fn tool_error(&self, name: &str, args: Value) -> String {
        let r = self.call(name, args).await;
        let text = text_of(&r);
        assert_eq!(
            r.is_error,
            Some(true),
            "{name} should have failed, returned: {text}"
        );
        text
    }

    /// Submits a manifest; returns the job id.
    pub async fn submit(&self, manifest: Value) -> String {
        let v = self.ok("submit_job", json!({ "manifest": manifest })).await;
        v["job_id"].as_str().expect("job_id").to_string()
    }

    /// Waits (calling wait_for_job repeatedly) until the job is final.
    pub async fn wait_final(&self, job_id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self
                .ok(
                    "wait_for_job",
                    json!({ "job_id": job_id, "timeout_seconds": 10 }),
                )
                .await;
            if v["finished"] == true {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} not final within {limit:?}: {v}"
            );
        }
    }

    /// Waits until the job's status is `state` (polling get_job_status).
    pub async fn wait_state(&self, job_id: &str, state: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.ok("get_job_status", json!({ "job_id": job_id })).await;
            if v["status"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not reach {state} within {limit:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Job `job_id`'s `stream` log (`stdout`, `stderr`, `combined`) from
    /// byte `cursor` on, read until the job is final and all of it is read.
    pub async fn log_from(&self, job_id: &str, stream: &str, mut cursor: u64) -> String {
        let mut text = String::new();
        loop {
            let v = self
                .ok(
                    "get_job_logs",
                    json!({"job_id": job_id, "stream": stream, "cursor": cursor}),
                )
                .await;
            text.push_str(v["data"].as_str().expect("the log's data"));
            cursor = v["next_cursor"].as_u64().expect("the log's next cursor");
            if v["complete"] == true {
                return text;
            }
        }
    }

    /// Kills the stdio server the hard way (SIGKILL) and waits until it is
    /// gone (exited or a zombie).
    pub async fn kill_server(self, limit: Duration) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;

        let pid = self.server_pid.expect("the stdio server's pid");
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the server");
        eventually("the killed server is gone", limit, || {
            kill(Pid::from_raw(pid as i32), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
        })
        .await;
    }

    /// Closes the session (and, over stdio, lets the host exit).
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }
}

/// The text content of a tool result, joined.
pub fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A streaming script job that writes a line every half second for 20 s.
pub fn ticking_manifest() -> Value {
    json!({
        "task": "for i in $(seq 1 40); do echo tick $i; sleep 0.5; done",
        "agentType": "script",
        "statusMode": "streaming",
        "timeout": 120
    })
}

/// A script job that prints `lines` lines, leaves `out/result.txt`, and
/// streams its output.
pub fn hello_manifest(lines: usize) -> Value {
    json!({
        "task": format!("for i in $(seq 1 {lines}); do echo \"line $i\"; done\nmkdir -p out\necho artifact-body > out/result.txt\necho to-stderr >&2"),
        "agentType": "script",
        "statusMode": "streaming",
        "timeout": 120,
        "artifacts": ["out/**"]
    })
}

/// A script job that runs until cancelled, marked so its processes can be
/// found: `sleep` runs under the name `marker`.
pub fn sleeper_manifest(marker: &str, timeout: u64) -> Value {
    json!({
        "task": format!("echo started\nexec -a {marker} sleep 600"),
        "agentType": "script",
        "statusMode": "streaming",
        "timeout": timeout,
    })
}

/// Pids of every process of the local sandboxes under `data_dir`: each
/// sandbox's recorded pid (`sandboxes/*/pid`) and all its descendants. (The
/// processes inside a sandbox see other paths than the host's, so their
/// command lines do not name the data directory.)
pub fn sandbox_pids(data_dir: &Path) -> Vec<u32> {
    let roots: Vec<u32> = std::fs::read_dir(data_dir.join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("pid")).ok())
                .filter_map(|t| t.split_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
    }
    let mut out = Vec::new();
    for &pid in parent.keys() {
        let mut p = pid;
        loop {
            if roots.contains(&p) {
                out.push(pid);
                break;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => break,
            }
        }
    }
    out
}

/// Pids of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            out.push(pid);
        }
    }
    out
}

/// Polls until `f` holds, or panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique marker for process names.
pub fn marker(tag: &str) -> String {
    format!("dlgt-{tag}-{}-{}", std::process::id(), fastrand::u32(..))
}

/// Writes `body` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write file");
    p
}

/// A loopback port that was free a moment ago, for a server that must keep
/// its address across a restart (guests remember the callback URL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Asserts that no file under `dir` holds `secret` (a key the host
/// keeps: the store, logs and artifacts must never have it).
pub fn assert_not_in_files(dir: &Path, secret: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the secret is in {}",
                    p.display()
                );
            }
        }
    }
}
