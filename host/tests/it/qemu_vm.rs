//! The qemu provider with real micro VMs (under TCG, as in CI): jobs run
//! end to end through the real manager and callback API inside a VM that
//! boots this machine's kernel; a cancelled or timed-out job leaves no QEMU
//! (or relay) process behind; a job's writes stay in the VM; the VM reaches
//! nothing on this machine but its callback and the egress gateway, which
//! lets it reach only what its policy allows.
//!
//! Needs: qemu-system-x86 and a readable /boot/vmlinuz-* with its modules
//! (CI installs qemu-system-x86 and linux-image-amd64), and a static
//! delegate-guest: `cargo build --release -p delegate-guest --target
//! x86_64-unknown-linux-musl` (or DELEGATE_QEMU_GUEST naming one). Each VM
//! boot takes about 10 s under TCG, so the VMs here are few and small.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::harness::{Host, eventually, settings, until_state};
use crate::support::origin::{Origin, Reply, gateway_settings};
use delegate_host::config::Settings;
use delegate_host::jobs::JobManager;
use delegate_host::model::LogSelector;
use delegate_host::provider::qemu::{AccelChoice, QemuArgs, QemuContext, QemuProvider};
use delegate_host::provider::{Isolation, Provider};
use delegate_proto::{JobManifest, JobState, LogStream};

/// The static guest: DELEGATE_QEMU_GUEST, else the workspace's musl build.
pub(crate) fn static_guest() -> PathBuf {
    if let Some(p) = std::env::var_os("DELEGATE_QEMU_GUEST") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-musl/release/delegate-guest");
    assert!(
        p.is_file(),
        "build the static guest first: cargo build --release -p delegate-guest \
         --target x86_64-unknown-linux-musl (or set DELEGATE_QEMU_GUEST)"
    );
    p
}

pub(crate) fn provider(dir: &Path) -> Arc<QemuProvider> {
    let args = QemuArgs {
        guest: Some(static_guest()),
        // CI machines have no working KVM; the probe has its own test.
        accel: AccelChoice::Tcg,
        boot_timeout_seconds: 180,
        ..QemuArgs::default()
    };
    let ctx = QemuContext::standard(std::env::var_os("PATH"), Vec::new(), dir);
    let settings = args
        .resolve(&ctx)
        .expect("QEMU, a kernel and its modules are installed");
    Arc::new(QemuProvider::new(settings).expect("the qemu provider starts"))
}

async fn qemu_host(dir: &Path) -> (Host, Arc<QemuProvider>) {
    qemu_host_with(dir, settings(dir, |_| {})).await
}

/// A host on `s` with small VMs.
async fn qemu_host_with(dir: &Path, mut s: Settings) -> (Host, Arc<QemuProvider>) {
    let p = provider(dir);
    assert_eq!(p.isolation(), Isolation::Vm);
    s.default_cpu = 1;
    s.default_memory = 512 << 20;
    s.default_disk = 64 << 20;
    s.heartbeat_threshold = Duration::from_secs(60);
    (Host::start(s, p.clone()).await, p)
}

pub(crate) fn script(task: &str, extra: serde_json::Value) -> JobManifest {
    let mut v = serde_json::json!({
        "task": task,
        "agentType": "script",
        "statusMode": "streaming",
        "timeout": 300,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    JobManifest::from_value(v).unwrap()
}

pub(crate) fn log_text(m: &JobManager, id: &str, which: LogSelector) -> String {
    String::from_utf8(m.read_log(id, which, 0, 1 << 20).unwrap().data).unwrap()
}

/// Processes whose command line mentions `needle` (QEMU runs with paths
/// under the test's directory; relays name the guest and the port).
pub(crate) fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) && pid != std::process::id() {
            found.push((pid, cmd));
        }
    }
    found
}

/// The job's VM is destroyed: no QEMU process runs for it, its directory
/// is gone, and no relay of this host is left.
pub(crate) async fn assert_nothing_left(host: &Host, dir: &Path, id: &str) {
    assert_vm_gone(host, dir, id).await;
    let relay = format!("relay 127.0.0.1:{}", host.port());
    eventually(30, "no relay process of this host", || async {
        processes_mentioning(&relay).is_empty().then_some(())
    })
    .await;
}

/// The job's VM is destroyed: no QEMU process runs for it and its
/// directory is gone (other VMs of the host may run).
pub(crate) async fn assert_vm_gone(host: &Host, dir: &Path, id: &str) {
    let m = host.manager();
    eventually(60, "the VM to be destroyed", || async {
        m.get(id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    let vm = m.get(id).unwrap().vm.expect("the job had a VM").id;
    let vm_dir = dir.join("qemu/vms").join(&vm);
    let marker = vm_dir.to_string_lossy().into_owned();
    eventually(30, "no QEMU process of this VM", || async {
        processes_mentioning(&marker).is_empty().then_some(())
    })
    .await;
    assert!(!vm_dir.exists(), "{} removed", vm_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_job_runs_end_to_end_in_a_micro_vm() {
    let dir = tempfile::tempdir().unwrap();
    let (host, p) = qemu_host(dir.path()).await;
    let m = host.manager().clone();
    let task = "echo hello from the vm; echo oops >&2; \
                echo uid=$(id -u) kernel=$(uname -r) host=$(hostname); \
                echo greeting=$GREETING; cat input.txt; \
                test -x /usr/bin/env && echo has-usr; cat /proc/self/cgroup; \
                grep ' /workspace ' /proc/mounts; df -B1M --output=size /workspace | tail -1; \
                mkdir -p out && echo data > out/a.txt && cp input.txt out/";
    let input = base64_of(b"from the host\n");
    let extra = serde_json::json!({
        "env": {"GREETING": "hi there"},
        "files": [{"path": "input.txt", "content": input}],
        "artifacts": ["out/*"],
    });
    let rec = m.submit(script(task, extra)).await.unwrap();
    assert_eq!(rec.isolation, Isolation::Vm);
    let done = m
        .wait(&rec.id, Duration::from_secs(50), |_| {})
        .await
        .unwrap();
    let done = if done.state.is_final() {
        done
    } else {
        until_state(&m, &rec.id, JobState::Success, 240).await
    };
    let log = log_text(&m, &rec.id, LogSelector::Combined);
    assert_eq!(done.state, JobState::Success, "{done:?}\nlog:\n{log}");
    let stdout = log_text(&m, &rec.id, LogSelector::Stream(LogStream::Stdout));
    assert!(stdout.contains("hello from the vm"), "{stdout}");
    assert!(
        stdout.contains(&format!("kernel={} ", p.kernel_release())),
        "the machine's own kernel: {stdout}"
    );
    assert!(stdout.contains("host=delegate-vm"), "{stdout}");
    assert!(
        !stdout.contains("uid=0 "),
        "the job runs unprivileged: {stdout}"
    );
    assert!(stdout.contains("greeting=hi there"), "{stdout}");
    assert!(
        stdout.contains("/dev/vda /workspace ext4"),
        "the workspace is a disk of its own: {stdout}"
    );
    assert!(
        stdout.contains("0::/delegate-job-"),
        "the job runs in a cgroup of its own: {stdout}"
    );
    assert!(stdout.contains("from the host"), "{stdout}");
    assert!(
        stdout.contains("has-usr"),
        "the machine's /usr is there: {stdout}"
    );
    assert_stderr_and_artifacts(&m, &rec.id);
    assert_nothing_left(&host, dir.path(), &rec.id).await;
    host.stop().await;
}

/// What the end-to-end script job (`oops` on stderr, `out/a.txt`, its
/// input copied to `out/input.txt`) leaves, on either kind of VM.
pub(crate) fn assert_stderr_and_artifacts(m: &JobManager, id: &str) {
    let stderr = m
        .read_log(id, LogSelector::Stream(LogStream::Stderr), 0, 1 << 20)
        .unwrap();
    assert_eq!(stderr.data, b"oops\n");
    assert_eq!(m.read_artifact(id, "out/a.txt", 100).unwrap(), b"data\n");
    assert_eq!(
        m.read_artifact(id, "out/input.txt", 100).unwrap(),
        b"from the host\n"
    );
}

pub(crate) fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_changes_nothing_on_the_host_and_reaches_only_its_callback_and_gateway() {
    let dir = tempfile::tempdir().unwrap();
    // One VM boot for both: the host runs a gateway, and its forward must
    // not open anything else.
    let allowed = Origin::start(Reply::Text("text/plain", "allowed body".into())).await;
    let denied = Origin::start(Reply::Text("text/plain", "denied body".into())).await;
    let (host, _p) = qemu_host_with(dir.path(), gateway_settings(dir.path(), 9)).await;
    let m = host.manager().clone();
    // A port on this machine's loopback that the VM must not reach: slirp
    // would map 10.0.2.2 to it without restrict=on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = format!("delegate-qemu-test-{}", uuid_like());
    let task = format!(
        "for d in / /usr /root /var/tmp; do \
           if echo x > $d/{name} 2>/dev/null; then echo wrote $d; else echo refused $d; fi; \
         done; \
         for a in 10.0.2.2 10.0.2.3 127.0.0.1; do \
           if timeout 5 bash -c 'echo hi > /dev/tcp/'$a'/{port}' 2>/dev/null; then echo reached $a; \
           else echo unreachable $a; fi; \
         done; \
         if cat /sys/firmware/qemu_fw_cfg/by_name/opt/delegate/bootstrap/raw >/dev/null 2>&1; \
           then echo bootstrap readable; else echo bootstrap private; fi; \
         echo allowed=$(curl -s -m 20 http://allowed.test:{a}/); \
         echo denied=$(curl -s -m 20 -o /dev/null -w '%{{http_code}}' http://denied.test:{d}/); \
         true",
        a = allowed.port(),
        d = denied.port(),
    );
    let policy = serde_json::json!({
        "network": {"allow": [format!("allowed.test:{}", allowed.port())]},
    });
    let rec = m.submit(script(&task, policy)).await.unwrap();
    let done = until_state(&m, &rec.id, JobState::Success, 240).await;
    let stdout = log_text(&m, &rec.id, LogSelector::Stream(LogStream::Stdout));
    assert_eq!(done.state, JobState::Success, "{stdout}");
    // Inside the VM /var/tmp is writable (the overlay); the rest is the
    // host's, owned by root, and the job runs unprivileged.
    assert!(stdout.contains("wrote /var/tmp"), "{stdout}");
    for d in ["/", "/usr", "/root", "/var/tmp"] {
        let on_host = Path::new(d).join(&name);
        assert!(!on_host.exists(), "{} reached the host", on_host.display());
    }
    for a in ["10.0.2.2", "10.0.2.3", "127.0.0.1"] {
        assert!(stdout.contains(&format!("unreachable {a}")), "{stdout}");
    }
    assert!(
        listener.accept().is_err(),
        "nothing connected to the host's port"
    );
    assert!(stdout.contains("bootstrap private"), "{stdout}");
    // Through the gateway's forward: the allowed origin answers, the other
    // is refused by the gateway and never contacted.
    assert!(stdout.contains("allowed=allowed body"), "{stdout}");
    assert!(stdout.contains("denied=403"), "{stdout}");
    assert_eq!(allowed.seen().len(), 1);
    assert!(denied.seen().is_empty());
    // The allowed connection is logged when it closes.
    let log = eventually(10, "both connections logged", || async {
        let log = delegate_host::egress::log::read(m.store(), &rec.id).unwrap();
        (log.len() == 2).then_some(log)
    })
    .await;
    assert_eq!(log.iter().filter(|r| r.allowed).count(), 1, "{log:?}");
    assert_eq!(log.iter().filter(|r| !r.allowed).count(), 1, "{log:?}");
    assert_nothing_left(&host, dir.path(), &rec.id).await;
    host.stop().await;
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_end_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _p) = qemu_host(dir.path()).await;
    let m = host.manager().clone();
    let cancelled = m
        .submit(script("echo started; sleep 300", serde_json::json!({})))
        .await
        .unwrap()
        .id;
    let timed_out = m
        .submit(script("sleep 300", serde_json::json!({"timeout": 20})))
        .await
        .unwrap()
        .id;
    until_state(&m, &cancelled, JobState::Running, 240).await;
    m.cancel(&cancelled).await.unwrap();
    until_state(&m, &cancelled, JobState::Cancelled, 60).await;
    let done = until_state(&m, &timed_out, JobState::Timeout, 240).await;
    assert_eq!(done.state, JobState::Timeout);
    assert_nothing_left(&host, dir.path(), &cancelled).await;
    assert_nothing_left(&host, dir.path(), &timed_out).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_fails_to_boot_fails_its_job_with_its_console() {
    let dir = tempfile::tempdir().unwrap();
    // A data directory spelled with `..`: the host resolves it, but init
    // refuses to hide such a path and powers off, as it would on any
    // failure before the job starts.
    let data = dir.path().join("x").join("..").join("data");
    std::fs::create_dir_all(&data).unwrap();
    let p = provider(&data);
    let s = settings(&data, |s| {
        s.default_cpu = 1;
        s.default_memory = 256 << 20;
    });
    let host = Host::start(s, p).await;
    let m = host.manager().clone();
    let id = m
        .submit(script("echo never", serde_json::json!({})))
        .await
        .unwrap()
        .id;
    let done = until_state(&m, &id, JobState::Failed, 240).await;
    let error = done.error.clone().unwrap_or_default();
    assert!(error.contains("delegate-init: failed"), "{error}");
    assert!(error.contains("is not an absolute path"), "{error}");
    assert_nothing_left(&host, &data, &id).await;
    host.stop().await;
}

/// `auto` probes KVM by booting the kernel in a child QEMU with a time
/// limit: where KVM works it is used, where it hangs (nested
/// virtualization, as on CI machines) the provider still starts, on TCG,
/// and says why.
#[test]
fn the_kvm_probe_is_bounded_and_says_what_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let args = QemuArgs {
        guest: Some(static_guest()),
        accel: AccelChoice::Auto,
        ..QemuArgs::default()
    };
    let ctx = QemuContext::standard(std::env::var_os("PATH"), Vec::new(), dir.path());
    let started = std::time::Instant::now();
    let p = QemuProvider::new(args.resolve(&ctx).unwrap()).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let said = p.describe();
    eprintln!("{said}");
    assert!(said.contains("KVM") || said.contains("TCG"), "{said}");
    assert!(said.contains(p.kernel_release()), "{said}");
    assert!(!p.accel().reason.is_empty());
}

/// A host that stops mid-job leaves its VM running; the next host on the
/// same data directory and callback port picks the job up (the VM's relay
/// connects afresh for every request) and the job completes, its VM then
/// destroyed by the new host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_finds_its_vm_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start = |p: Arc<QemuProvider>| {
        let s = settings(dir.path(), |s| {
            s.default_cpu = 1;
            s.default_memory = 512 << 20;
            s.default_disk = 64 << 20;
            s.heartbeat_threshold = Duration::from_secs(60);
            s.callback_bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        });
        Host::start(s, p)
    };
    let first = start(provider(dir.path())).await;
    let m = first.manager().clone();
    let id = m
        .submit(script(
            "echo before; sleep 15; echo after",
            serde_json::json!({}),
        ))
        .await
        .unwrap()
        .id;
    let vm = until_state(&m, &id, JobState::Running, 240)
        .await
        .vm
        .unwrap();
    first.stop().await;
    let vm_dir = dir.path().join("qemu/vms").join(&vm.id);
    assert!(vm_dir.exists(), "the VM outlives the host");

    let second = start(provider(dir.path())).await;
    let m = second.manager().clone();
    let done = until_state(&m, &id, JobState::Success, 240).await;
    let stdout = log_text(&m, &id, LogSelector::Stream(LogStream::Stdout));
    assert_eq!(done.state, JobState::Success, "{stdout}");
    assert!(stdout.contains("after"), "{stdout}");
    assert_nothing_left(&second, dir.path(), &id).await;
    second.stop().await;
}

/// Four VMs at once on a two-core machine under TCG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_vms_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _p) = qemu_host(dir.path()).await;
    let m = host.manager().clone();
    let mut ids = Vec::new();
    for i in 0..4 {
        let task = format!("echo job {i}; sleep 15");
        ids.push(
            m.submit(script(&task, serde_json::json!({})))
                .await
                .unwrap()
                .id,
        );
    }
    let marker = dir.path().join("qemu/vms").to_string_lossy().into_owned();
    eventually(240, "four QEMU processes at once", || async {
        (processes_mentioning(&marker).len() >= 4).then_some(())
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let done = until_state(&m, id, JobState::Success, 300).await;
        let stdout = log_text(&m, id, LogSelector::Stream(LogStream::Stdout));
        assert_eq!(done.state, JobState::Success, "{stdout}");
        assert!(stdout.contains(&format!("job {i}")), "{stdout}");
    }
    for id in &ids {
        assert_nothing_left(&host, dir.path(), id).await;
    }
    host.stop().await;
}
