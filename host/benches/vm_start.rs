//! VM start benchmark (issue 10): submit-to-running and submit-to-success
//! of an `echo hi` script job on the qemu provider's micro VM (KVM when the
//! bounded probe passes, else TCG: the figures say which), cold and taken
//! from a warm pool (issue 13), and on the local sandbox, through the real
//! engine in this process; the host memory of one idle VM (QEMU's
//! resident set, beside the RAM the VM was given) and the CPU a paused
//! pool VM uses. Prints figures next to the targets; timing never fails
//! the run.
//!
//! Needs what the qemu tests need (QEMU, a kernel, a static guest):
//! `cargo build --release -p delegate-guest --target x86_64-unknown-linux-musl`,
//! then `cargo bench -p delegate-host --bench vm_start`.

#[path = "../tests/it/support/mod.rs"]
#[expect(
    dead_code,
    reason = "the integration tests' support; the benchmark uses part of it"
)]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_host::jobs::JobManager;
use delegate_host::model::PoolVmState;
use delegate_host::pool::parse_pool;
use delegate_host::provider::Provider;
use delegate_host::provider::local::{LocalArgs, LocalProvider};
use delegate_host::provider::qemu::{AccelChoice, QemuArgs, QemuContext, QemuProvider};
use delegate_host::resolve::ProcessMachine;
use delegate_proto::{JobManifest, JobState};
use support::harness::{Host, eventually, settings, until_state};

/// Jobs per figure (each VM boot is 5-10 s under TCG) with `cargo bench`
/// (which passes `--bench`); `cargo test --all-targets` runs this binary
/// too, and then one job each only proves every measurement still works.
fn runs() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        3
    } else {
        1
    }
}

fn static_guest() -> PathBuf {
    std::env::var_os("DELEGATE_QEMU_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/x86_64-unknown-linux-musl/release/delegate-guest")
        })
}

fn echo_hi(task: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": task, "agentType": "script", "timeout": 300,
        "resources": {"cpu": 1, "memory": "512M", "disk": "64M"},
    }))
    .expect("manifest")
}

/// Submit-to-running and submit-to-success of `runs()` jobs, one at a time.
async fn timings(m: &JobManager) -> Vec<(Duration, Duration)> {
    let mut out = Vec::new();
    for _ in 0..runs() {
        out.push(time_one(m).await.1);
    }
    out
}

/// One job's id, submit-to-running and submit-to-success.
async fn time_one(m: &JobManager) -> (String, (Duration, Duration)) {
    let start = Instant::now();
    let id = m.submit(echo_hi("echo hi")).await.expect("submit").id;
    let mut running = None;
    loop {
        let r = m.get(&id).expect("job");
        if running.is_none() && r.state != JobState::Pending && r.state != JobState::Provisioning {
            running = Some(start.elapsed());
        }
        if r.state.is_final() {
            assert_eq!(r.state, JobState::Success, "{r:?}");
            return (id, (running.unwrap_or(start.elapsed()), start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pool's ready VMs.
fn ready_pool_vms(m: &JobManager) -> Vec<String> {
    m.store()
        .pool_list()
        .expect("pool rows")
        .into_iter()
        .filter(|r| r.state == PoolVmState::Ready)
        .map(|r| r.vm.id)
        .collect()
}

/// A process's CPU time (user and system) in ms: /proc counts in USER_HZ,
/// 100 per second.
fn cpu_ms(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10)
        })
        .unwrap_or(0)
}

fn qemu_pid(qemu: &QemuProvider, vm: &str) -> u32 {
    std::fs::read_to_string(qemu.vm_dir(vm).pid_file)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The same jobs on a host with a pool of one micro VM of their size: each
/// waits until the pool holds a ready VM, so every job starts warm. Also
/// the CPU the paused VM used over 3 s.
async fn pooled(dir: &Path, qemu: Arc<QemuProvider>) -> (Vec<(Duration, Duration)>, u64) {
    let s = settings(dir, |s| {
        s.pool = parse_pool("micro:1c512m64m=1").expect("pool");
    });
    let host = Host::start(s, qemu.clone()).await;
    let m = host.manager().clone();
    let mut out = Vec::new();
    let mut idle_cpu = 0;
    for i in 0..runs() {
        let ready = eventually(300, "a ready pool VM", || async {
            ready_pool_vms(&m).into_iter().next()
        })
        .await;
        if i == 0 {
            let pid = qemu_pid(&qemu, &ready);
            let before = cpu_ms(pid);
            tokio::time::sleep(Duration::from_secs(3)).await;
            idle_cpu = cpu_ms(pid).saturating_sub(before);
        }
        let (id, t) = time_one(&m).await;
        out.push(t);
        assert!(
            m.get(&id).expect("job").vm_start.is_some_and(|s| s.warm),
            "the job took the pool VM"
        );
    }
    host.stop().await;
    (out, idle_cpu)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Where a QEMU process's resident memory is, in KiB, from smaps.
#[derive(Debug, Default)]
struct Breakdown {
    /// The guest's RAM (the anonymous mapping of the RAM's size).
    guest_ram: u64,
    /// TCG's translation cache (the one writable and executable mapping).
    tcg_cache: u64,
    /// Other anonymous memory: QEMU's heap, device state, the copies of
    /// the kernel and initramfs it serves through fw_cfg.
    other_anon: u64,
    /// File-backed pages (QEMU, its libraries, the initramfs): page cache
    /// shared by every VM.
    file: u64,
}

fn breakdown(pid: u32, ram_kib: u64) -> Breakdown {
    let mut b = Breakdown::default();
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return b;
    };
    let (mut size, mut exec_write, mut anon_file) = (0u64, false, false);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if first.contains('-') && first.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-') {
            let perms = f.next().unwrap_or("");
            exec_write = perms.starts_with("rwx");
            // A path (or [heap]/[stack]) after offset, device and inode.
            anon_file = f.nth(3).is_some_and(|p| p.starts_with('/'));
            continue;
        }
        let value: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match first {
            "Size:" => size = value,
            "Rss:" if anon_file => b.file += value,
            "Rss:" if exec_write => b.tcg_cache += value,
            "Rss:" if (ram_kib..=ram_kib + 4096).contains(&size) => b.guest_ram += value,
            "Rss:" => b.other_anon += value,
            _ => {}
        }
    }
    b
}

fn summary(name: &str, t: &[(Duration, Duration)]) {
    let best = |f: fn(&(Duration, Duration)) -> Duration| t.iter().map(f).min().unwrap_or_default();
    let worst =
        |f: fn(&(Duration, Duration)) -> Duration| t.iter().map(f).max().unwrap_or_default();
    println!(
        "{name:<32} submit->running {:>7.2} s (worst {:.2})   submit->success {:>7.2} s (worst {:.2})",
        best(|x| x.0).as_secs_f64(),
        worst(|x| x.0).as_secs_f64(),
        best(|x| x.1).as_secs_f64(),
        worst(|x| x.1).as_secs_f64(),
    );
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");

    let local_dir = dir.path().join("local");
    let local_settings = LocalArgs::default()
        .resolve(&local_dir, &ProcessMachine)
        .expect("delegate-guest built");
    let local: Arc<dyn Provider> =
        Arc::new(LocalProvider::new(local_settings.clone()).expect("local provider"));
    let host = Host::start(
        settings(&local_dir, |s| s.local = Some(local_settings)),
        local,
    )
    .await;
    let local_t = timings(host.manager()).await;
    host.stop().await;

    let qemu_dir = dir.path().join("qemu");
    let args = QemuArgs {
        guest: Some(static_guest()),
        accel: AccelChoice::Auto,
        ..QemuArgs::default()
    };
    let ctx = QemuContext::standard(std::env::var_os("PATH"), Vec::new(), &qemu_dir);
    let qemu = Arc::new(
        QemuProvider::new(args.resolve(&ctx).expect("qemu settings")).expect("qemu provider"),
    );
    let accel = qemu.accel().clone();
    let host = Host::start(settings(&qemu_dir, |_| {}), qemu.clone()).await;
    let m = host.manager().clone();
    let qemu_t = timings(&m).await;

    // One idle VM: a job that sleeps; QEMU's resident set once it runs.
    let id = m.submit(echo_hi("sleep 120")).await.expect("submit").id;
    let rec = until_state(&m, &id, JobState::Running, 300).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let vm = rec.vm.expect("a VM");
    let pid: u32 = std::fs::read_to_string(qemu.vm_dir(&vm.id).pid_file)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let rss = rss_kib(pid);
    let b = breakdown(pid, 512 * 1024);
    m.cancel(&id).await.expect("cancel");
    until_state(&m, &id, JobState::Cancelled, 60).await;
    // Stopping the engine leaves VMs running (a restart reconciles them):
    // wait for the driver to destroy this one first.
    eventually(60, "the idle VM to be destroyed", || async {
        m.get(&id).expect("job").vm_destroyed.then_some(())
    })
    .await;
    host.stop().await;
    let (pooled_t, idle_cpu) = pooled(&qemu_dir.join("pooled"), qemu.clone()).await;

    if runs() == 1 {
        println!("smoke run (under `cargo test`): figures are not measurements");
    }
    println!("VM start (best and worst of {}, `echo hi`):", runs());
    summary("local sandbox", &local_t);
    summary(
        &format!("micro VM, {}", accel.accel.as_str().to_uppercase()),
        &qemu_t,
    );
    summary(
        &format!("pooled micro VM, {}", accel.accel.as_str().to_uppercase()),
        &pooled_t,
    );
    println!("  accelerator: {}", accel.reason);
    println!("  a paused pool VM's QEMU used {idle_cpu} ms of CPU in 3 s (target: about 0)");
    println!("  targets: micro VM submit->running < 1.5 s with KVM, < 15 s under TCG");
    let m = |kib: u64| kib as f64 / 1024.0;
    println!(
        "idle micro VM (512 MiB RAM), QEMU resident {:.1} MiB: guest RAM {:.1}, TCG cache {:.1}, \
         other anonymous {:.1}, file-backed (shared by all VMs) {:.1}",
        m(rss),
        m(b.guest_ram),
        m(b.tcg_cache),
        m(b.other_anon),
        m(b.file)
    );
    println!(
        "  beyond the guest's RAM: {:.1} MiB, {:.1} MiB without shared file pages, {:.1} MiB \
         without TCG's cache too (what a KVM VM has; target: < 20 MiB)",
        m(rss.saturating_sub(b.guest_ram)),
        m(b.tcg_cache + b.other_anon),
        m(b.other_anon)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}
