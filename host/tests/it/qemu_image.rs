//! The qemu provider's disk-image mode, and the template proven by booting
//! it: `tests/packer/build-image.sh` builds the job template from the same
//! provisioning the Packer config runs (packer/scripts/provision.sh in a
//! debootstrap root) as a qcow2 image; a job names it by `vmTemplate` in the
//! image directory, boots a copy-on-write overlay of it under TCG with this
//! machine's kernel and initrd, and runs end to end through the template's
//! own systemd units (bootstrap from fw_cfg, `delegate-guest boot`, events,
//! artifacts, result); then the VM and its overlay are gone.
//!
//! Needs: root, debootstrap, e2fsprogs, qemu-utils, kmod and the Debian
//! mirror (the image build; about two minutes the first time, cached in
//! target/template-image while its inputs are unchanged), qemu-system-x86,
//! a readable /boot/vmlinuz-* with its modules and initrd (CI installs
//! linux-image-amd64), and the static delegate-guest (see qemu_vm.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::qemu_vm::{
    assert_nothing_left, assert_stderr_and_artifacts, base64_of, log_text, script, static_guest,
};
use crate::support::harness::{Host, settings, until_state};
use delegate_host::model::LogSelector;
use delegate_host::provider::qemu::{AccelChoice, ImageBoot, QemuArgs, QemuContext, QemuProvider};
use delegate_proto::{JobState, LogStream};

/// The template's name in the image directory.
const TEMPLATE: &str = "delegate-template";

/// Builds (or finds up to date) the template image; returns its directory.
fn template_image_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("target/template-image");
    let status = std::process::Command::new("bash")
        .arg(repo.join("tests/packer/build-image.sh"))
        .arg(dir.join(format!("{TEMPLATE}.qcow2")))
        .env("DELEGATE_GUEST_BIN", static_guest())
        .status()
        .expect("bash runs tests/packer/build-image.sh");
    assert!(status.success(), "tests/packer/build-image.sh: {status}");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_image_runs_a_job_through_its_own_units() {
    let images = template_image_dir();
    let dir = tempfile::tempdir().unwrap();
    let args = QemuArgs {
        guest: Some(static_guest()),
        accel: AccelChoice::Tcg,
        boot_timeout_seconds: 300,
        image_dir: Some(images),
        image_boot: ImageBoot::Kernel,
        ..QemuArgs::default()
    };
    let ctx = QemuContext::standard(std::env::var_os("PATH"), Vec::new(), dir.path());
    let settings_q = args
        .resolve(&ctx)
        .expect("QEMU, qemu-img, a kernel, its modules and initrd are installed");
    let p = Arc::new(QemuProvider::new(settings_q).expect("the qemu provider starts"));
    let s = settings(dir.path(), |s| {
        s.default_cpu = 1;
        s.default_memory = 768 << 20;
        // Larger than the image's 2 GiB: the overlay is, and the
        // template's growroot grows the file system to it.
        s.default_disk = 3 << 30;
        s.heartbeat_threshold = Duration::from_secs(120);
    });
    let host = Host::start(s, p.clone()).await;
    let m = host.manager().clone();
    let task = "echo hello from the template; echo oops >&2; \
                echo uid=$(id -un) init=$(cat /proc/1/comm) host=$(hostname); \
                cat /proc/self/cgroup; grep -o 'root=[^ ]*' /proc/cmdline; \
                echo greeting=$GREETING; cat input.txt; pwd; \
                df -B1M --output=size / | tail -1 | tr -d ' ' | sed 's/^/root-mib=/'; \
                mkdir -p out && echo data > out/a.txt && cp input.txt out/";
    let extra = serde_json::json!({
        "vmTemplate": TEMPLATE,
        "env": {"GREETING": "hi there"},
        "files": [{"path": "input.txt", "content": base64_of(b"from the host\n")}],
        "artifacts": ["out/*"],
    });
    let rec = m.submit(script(task, extra)).await.unwrap();
    let done = until_state(&m, &rec.id, JobState::Success, 600).await;
    assert_eq!(
        m.accelerator_of(&done),
        Some("tcg"),
        "the status names the accelerator"
    );
    let log = log_text(&m, &rec.id, LogSelector::Combined);
    assert_eq!(done.state, JobState::Success, "{done:?}\nlog:\n{log}");
    let stdout = log_text(&m, &rec.id, LogSelector::Stream(LogStream::Stdout));
    assert!(stdout.contains("hello from the template"), "{stdout}");
    assert!(
        stdout.contains("uid=delegate init=systemd host=delegate-template"),
        "the image's own systemd ran the job as the template's job user: {stdout}"
    );
    assert!(
        stdout.contains("delegate-guest.service"),
        "the runner was started by the template's unit: {stdout}"
    );
    assert!(stdout.contains("root=/dev/vda"), "{stdout}");
    assert!(stdout.contains("greeting=hi there"), "{stdout}");
    assert!(stdout.contains("from the host"), "{stdout}");
    assert!(stdout.contains("/workspace"), "{stdout}");
    let root_mib: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("root-mib="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no root size in {stdout}"));
    assert!(
        root_mib > 2560,
        "the root grew to the job's 3 GiB disk: {root_mib} MiB"
    );
    assert_stderr_and_artifacts(&m, &rec.id);
    // The VM, its directory and with it the overlay are gone.
    assert_nothing_left(&host, dir.path(), &rec.id).await;
    host.stop().await;
}
