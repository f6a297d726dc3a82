//! Choosing the accelerator. KVM is used only after a bounded probe: on
//! some machines (nested virtualization) `/dev/kvm` opens and even runs a
//! few instructions, but a KVM guest hangs once it boots a kernel. So the
//! probe boots the real kernel and initramfs in a child QEMU with
//! `delegate.probe` (init powers off at once) and a time limit: a working
//! KVM finishes in about a second, a broken one is killed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::argv::{self, VmSpec};
use super::settings::AccelChoice;

/// How long the probe may take; a working KVM boots in 1-2 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
use delegate_proto::microvm::PROBE_MARKER;

/// The accelerator VMs run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's emulator: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// QEMU's name, for `-accel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator and why it was chosen, for statuses and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    /// The accelerator.
    pub accel: Accel,
    /// Why, e.g. "KVM probe hung for 5 s".
    pub reason: String,
}

/// Boots `spec` (made for the probe: KVM, no network, no share) with
/// `delegate.probe`; `Ok` with the time it took when init reported back.
pub fn probe(spec: &VmSpec, timeout: Duration) -> Result<Duration, String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("/dev/kvm cannot be opened: {e}"));
    }
    let _ = std::fs::remove_file(&spec.console);
    let argv = argv::build(spec).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", spec.binary.display()))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "KVM probe: a KVM guest did not boot within {} s (nested virtualization?)",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for the KVM probe: {e}")),
        }
    };
    let console = std::fs::read_to_string(&spec.console).unwrap_or_default();
    if status.success() && console.contains(PROBE_MARKER) {
        return Ok(started.elapsed());
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut err);
    }
    let last = err
        .lines()
        .chain(console.lines())
        .last()
        .unwrap_or("")
        .to_string();
    Err(format!("KVM probe failed ({status}): {last}"))
}

/// Applies the user's choice: `tcg` without probing, `kvm` only when the
/// probe passes, `auto` KVM when it passes and TCG otherwise.
pub fn decide(
    choice: AccelChoice,
    probe_spec: &VmSpec,
    timeout: Duration,
) -> Result<AccelDecision, String> {
    if choice == AccelChoice::Tcg {
        return Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "DELEGATE_QEMU_ACCEL=tcg".into(),
        });
    }
    match probe(probe_spec, timeout) {
        Ok(took) => Ok(AccelDecision {
            accel: Accel::Kvm,
            reason: format!("KVM probe passed in {} ms", took.as_millis()),
        }),
        Err(why) if choice == AccelChoice::Auto => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: format!("{why}; using TCG (emulation, much slower)"),
        }),
        Err(why) => Err(format!("DELEGATE_QEMU_ACCEL=kvm: {why}")),
    }
}
