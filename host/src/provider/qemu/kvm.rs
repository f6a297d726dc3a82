//! Choosing the accelerator. KVM is used only after a bounded probe: on
//! some machines (nested virtualization) `/dev/kvm` opens and even runs a
//! few instructions, but a KVM guest hangs once it boots a kernel. So the
//! probe boots the real kernel and initramfs in a child QEMU with
//! `delegate.probe` (init powers off at once) and a time limit: a working
//! KVM finishes in about a second, a broken one is killed.

use std::path::Path;
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

/// A probe's outcome kept on disk: the probe boots a VM (up to
/// [`PROBE_TIMEOUT`] where nested KVM hangs), so it runs once per machine
/// boot, QEMU binary and kernel, not at every start of the host or of a
/// CLI command. The file holds the key, then `ok` or `failed`, then why.
#[derive(Debug, Clone)]
pub struct ProbeCache<'a> {
    /// `<state dir>/kvm-probe`.
    pub file: &'a Path,
    /// What the outcome depends on (see [`cache_key`]).
    pub key: String,
}

/// The cache key: this boot of the machine, the QEMU binary (path and
/// modification time) and the kernel release.
pub fn cache_key(qemu: &Path, kernel_release: &str) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mtime = std::fs::metadata(qemu)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!(
        "{} {} {mtime} {kernel_release}",
        boot.trim(),
        qemu.display()
    )
    .replace('\n', " ")
}

impl ProbeCache<'_> {
    /// The remembered outcome, when its key still holds.
    pub fn read(&self) -> Option<Result<String, String>> {
        let text = std::fs::read_to_string(self.file).ok()?;
        let mut lines = text.lines();
        if lines.next()? != self.key {
            return None;
        }
        let outcome = lines.next()?;
        let why = lines.next().unwrap_or("").to_string();
        match outcome {
            "ok" => Some(Ok(why)),
            "failed" => Some(Err(why)),
            _ => None,
        }
    }

    fn write(&self, outcome: &Result<String, String>) {
        let (word, why) = match outcome {
            Ok(why) => ("ok", why),
            Err(why) => ("failed", why),
        };
        let text = format!("{}\n{word}\n{}\n", self.key, why.replace('\n', " "));
        if let Err(e) = std::fs::write(self.file, text) {
            tracing::debug!(error = %e, file = %self.file.display(), "cannot keep the KVM probe's outcome");
        }
    }
}

/// Applies the user's choice: `tcg` without probing, `kvm` only when the
/// probe passes, `auto` KVM when it passes and TCG otherwise. The probe's
/// outcome comes from `cache` when it holds one for this boot.
pub fn decide(
    choice: AccelChoice,
    probe_spec: &VmSpec,
    timeout: Duration,
    cache: &ProbeCache<'_>,
) -> Result<AccelDecision, String> {
    if choice == AccelChoice::Tcg {
        return Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "DELEGATE_QEMU_ACCEL=tcg".into(),
        });
    }
    let outcome = match cache.read() {
        Some(known) => known,
        None => {
            let fresh = probe(probe_spec, timeout)
                .map(|took| format!("KVM probe passed in {} ms", took.as_millis()));
            cache.write(&fresh);
            fresh
        }
    };
    decide_from(choice, outcome)
}

/// The accelerator a probe's outcome gives under `choice`.
pub fn decide_from(
    choice: AccelChoice,
    outcome: Result<String, String>,
) -> Result<AccelDecision, String> {
    if choice == AccelChoice::Tcg {
        return Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "DELEGATE_QEMU_ACCEL=tcg".into(),
        });
    }
    match outcome {
        Ok(reason) => Ok(AccelDecision {
            accel: Accel::Kvm,
            reason,
        }),
        Err(why) if choice == AccelChoice::Auto => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: format!("{why}; using TCG (emulation, much slower)"),
        }),
        Err(why) => Err(format!("DELEGATE_QEMU_ACCEL=kvm: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_outcome_counts_only_for_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kvm-probe");
        let cache = ProbeCache {
            file: &file,
            key: "boot-1 /usr/bin/qemu 5 6.1".into(),
        };
        assert_eq!(cache.read(), None);
        cache.write(&Err(
            "KVM probe: a KVM guest did not boot\nwithin 15 s".into()
        ));
        assert_eq!(
            cache.read(),
            Some(Err("KVM probe: a KVM guest did not boot within 15 s".into()))
        );
        let other = ProbeCache {
            file: &file,
            key: "boot-2 /usr/bin/qemu 5 6.1".into(),
        };
        assert_eq!(other.read(), None, "another boot probes again");
        other.write(&Ok("KVM probe passed in 900 ms".into()));
        assert_eq!(other.read(), Some(Ok("KVM probe passed in 900 ms".into())));
    }

    #[test]
    fn the_choice_applies_to_the_outcome() {
        let hung = || Err::<String, String>("hung".into());
        assert_eq!(
            decide_from(AccelChoice::Auto, hung()).unwrap().accel,
            Accel::Tcg
        );
        assert!(decide_from(AccelChoice::Kvm, hung()).is_err());
        assert_eq!(
            decide_from(AccelChoice::Tcg, Ok("passed".into()))
                .unwrap()
                .accel,
            Accel::Tcg
        );
        assert_eq!(
            decide_from(AccelChoice::Auto, Ok("passed".into()))
                .unwrap()
                .accel,
            Accel::Kvm
        );
    }
}
