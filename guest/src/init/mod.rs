//! `delegate-guest` as PID 1 of a micro VM (the `qemu` provider's
//! initramfs, where the kernel runs it as `/init`).
//!
//! It loads the modules the host bundled, mounts the machine's root
//! read-only over virtio-9p under an overlay in memory, gives the job fresh
//! `/proc`, `/sys`, `/dev`, `/tmp`, `/run` and a `/workspace` tmpfs sized by
//! the job's disk, brings up the network, moves into the new root and runs
//! `delegate-guest boot` there (which finds its bootstrap in QEMU's fw_cfg,
//! or in a pooled VM waits for it on a virtio-serial port).
//! When that ends, everything left is killed and the VM powers off, so
//! QEMU exits. Whatever fails, the VM powers off with the reason on the
//! console, which the host quotes in the job's error.

mod cmdline;
mod modules;
mod mounts;
mod net;

pub use cmdline::InitConfig;

use delegate_proto::microvm::{FAILED_MARKER, PROBE_MARKER, READY_MARKER};

use std::ffi::CString;
use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

/// True when this process is the kernel's `/init` (PID 1 started as
/// `/init`). A sandboxed runner is PID 1 of its namespace too, but never
/// started under that name.
pub fn is_vm_init() -> bool {
    std::process::id() == 1 && std::env::args_os().next().is_some_and(|a| a == "/init")
}

/// Runs the VM and powers it off; never returns.
pub fn main() -> ! {
    match run() {
        Ok(status) if status == PROBE_MARKER => eprintln!("{PROBE_MARKER}"),
        Ok(status) => eprintln!("delegate-init: the runner exited ({status}); powering off"),
        Err(e) => eprintln!("{FAILED_MARKER} {e}"),
    }
    power_off()
}

fn run() -> Result<String, String> {
    mounts::early()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
    let cfg = InitConfig::parse(&cmdline)?;
    if cfg.probe {
        return Ok(PROBE_MARKER.to_string());
    }
    modules::load_all(Path::new(modules::LOAD_LIST))?;
    mounts::root()?;
    mounts::inside(&cfg)?;
    net::configure()?;
    let _ = nix::unistd::sethostname("delegate-vm");
    mounts::enter()?;
    eprintln!("{READY_MARKER}");
    let child = spawn_runner()?;
    Ok(reap_until(child))
}

/// Forks and runs `delegate-guest boot` from this same binary (still
/// reachable as `/proc/self/exe` after the move).
fn spawn_runner() -> Result<Pid, String> {
    let exe = c"/proc/self/exe";
    let argv = [c"delegate-guest".to_owned(), c"boot".to_owned()];
    let env: Vec<CString> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "DELEGATE_GUEST_LOG=info",
    ]
    .iter()
    .map(|s| CString::new(*s).expect("no NUL in constants"))
    .collect();
    // SAFETY: this process is single-threaded (no runtime started yet), so
    // the child may do anything before exec.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            let err = nix::unistd::execve(exe, &argv, &env).unwrap_err();
            eprintln!("{FAILED_MARKER} exec {exe:?} boot: {err}");
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => Ok(child),
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// Reaps every process (PID 1 inherits orphans) until `runner` ends.
fn reap_until(runner: Pid) -> String {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == runner => return format!("exit {code}"),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == runner => {
                return format!("killed by {sig}");
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return format!("waiting for the runner: {e}"),
        }
    }
}

/// Ends every other process, flushes and powers off. Under QEMU's
/// `-no-reboot` a panic ends the VM too, so even a failure here stops it.
fn power_off() -> ! {
    // SAFETY: plain syscalls without pointers.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot(2) does not return on success; PID 1 exiting panics the
    // kernel, which -no-reboot turns into QEMU exiting.
    std::process::exit(1)
}
