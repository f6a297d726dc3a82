//! QEMU command lines, built as argv arrays (never shell text) so tests can
//! check them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::kvm::Accel;

/// The address the VM reaches the callback API at: QEMU user networking
/// forwards connections to it (and to nothing else) to the host.
pub const CALLBACK_GUEST_ADDR: &str = "10.0.2.100";
/// The port of [`CALLBACK_GUEST_ADDR`].
pub const CALLBACK_GUEST_PORT: u16 = 80;
/// The port at [`CALLBACK_GUEST_ADDR`] forwarded to the egress gateway:
/// the VM's `HTTP_PROXY`, its one other way out.
pub const EGRESS_GUEST_PORT: u16 = 3128;
/// fw_cfg entry the guest reads its bootstrap from.
pub const BOOTSTRAP_FW_CFG: &str = "opt/delegate/bootstrap";
use delegate_proto::microvm::{POOL_PORT, ROOT_TAG};

/// TCG's translation cache in MiB (see [`build`]).
pub const TCG_TB_MIB: u32 = 16;

/// Everything one VM's command line depends on.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The VM's name in QEMU (and in `ps`): `delegate-<vm name>`.
    pub name: String,
    /// The QEMU binary.
    pub binary: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// What the VM boots.
    pub boot: Boot,
    /// The console log file.
    pub console: PathBuf,
    /// What the VM may reach: `None` for no network at all (the KVM
    /// probe), else the relay command run per connection.
    pub network: Option<Network>,
    /// The bootstrap file for fw_cfg (`None` in the KVM probe and in a
    /// pool VM, which has no job yet).
    pub bootstrap: Option<PathBuf>,
    /// A pool VM's bootstrap channel: the Unix socket QEMU listens on for
    /// the host, the other end of the VM's virtio-serial port
    /// [`POOL_PORT`].
    pub pool_port: Option<PathBuf>,
    /// The QMP socket (`None` in the KVM probe).
    pub qmp: Option<PathBuf>,
    /// Export the machine's root read-only over virtio-9p.
    pub share_root: bool,
    /// The `/workspace` disk of a micro VM (its first virtio disk, `/dev/vda`).
    pub workspace_disk: Option<PathBuf>,
    /// The job's qcow2 overlay of a disk image (the first virtio disk).
    pub root_disk: Option<PathBuf>,
}

/// What a VM boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// A micro VM: the kernel with delegate's initramfs, whose `/init` is
    /// the guest.
    MicroVm {
        /// The kernel image.
        kernel: PathBuf,
        /// delegate's initramfs.
        initramfs: PathBuf,
        /// Extra kernel parameters (`delegate.*`).
        params: Vec<String>,
        /// The same kernel, initramfs and parameters on a boot disk the
        /// BIOS boots (see `bootdisk`), used in place of `-kernel`.
        boot_disk: Option<PathBuf>,
    },
    /// A disk image that is a bare file system: the machine's kernel and
    /// an initrd that mounts it from `/dev/vda`.
    ImageKernel {
        /// The kernel image.
        kernel: PathBuf,
        /// An initrd that can mount an ext4 root on virtio-blk.
        initrd: PathBuf,
    },
    /// A disk image with its own boot loader.
    Firmware,
}

/// The forwards of a VM's network: the callback API, and the egress
/// gateway when the host runs one.
#[derive(Debug, Clone)]
pub struct Network {
    /// The relay (a static `delegate-guest`), run by QEMU per connection.
    pub relay: PathBuf,
    /// `HOST:PORT` of the callback API on this machine.
    pub target: String,
    /// `HOST:PORT` of the egress gateway on this machine, if any.
    pub egress: Option<String>,
}

/// A value inside a QEMU `-opt key=value,...` list: commas are doubled.
fn opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn path_opt(p: &Path) -> String {
    opt(&p.to_string_lossy())
}

/// Why a path cannot go into a QEMU command line safely.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path:?} cannot be passed to QEMU: {why}")]
pub struct ArgvError {
    what: &'static str,
    path: String,
    why: &'static str,
}

/// The relay command to `target` for `guestfwd=...-cmd:` (split by QEMU
/// like a shell would, so the program is quoted; a quote in it cannot be).
fn relay_command(net: &Network, target: &str) -> Result<String, ArgvError> {
    let relay = net.relay.to_string_lossy();
    if relay.contains('\'')
        || !target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:[]-".contains(&b))
    {
        return Err(ArgvError {
            what: "the relay",
            path: format!("{relay} {target}"),
            why: "it contains a quote or an unexpected character",
        });
    }
    Ok(format!("'{relay}' relay {target}"))
}

/// The kernel command line. `panic=-1` with `-no-reboot` makes a crashed
/// init end QEMU instead of hanging.
pub fn kernel_cmdline(params: &[String]) -> String {
    let mut line = String::from("console=ttyS0 panic=-1 loglevel=4 rdinit=/init");
    for p in params {
        line.push(' ');
        line.push_str(p);
    }
    line
}

/// The kernel command line of a disk image booted with the machine's
/// kernel: its init is the image's own (systemd).
pub fn image_cmdline() -> String {
    "console=ttyS0 root=/dev/vda rw panic=-1 loglevel=4".into()
}

/// The full argv.
pub fn build(spec: &VmSpec) -> Result<Vec<OsString>, ArgvError> {
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("delegate-{}", opt(&spec.name)),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        match spec.accel {
            Accel::Kvm => "kvm".into(),
            // TCG's translation cache defaults to 1 GiB and fills as code
            // runs: host memory beyond the VM's RAM. A micro VM's boot
            // alone translates ~40 MiB; capped at 16 MiB the cache is
            // flushed and refilled instead, which cost no measurable boot
            // time (4.4-5.3 s guest boot with 16 or 64 MiB, at load 20) and
            // saves ~28 MiB per VM.
            Accel::Tcg => format!("tcg,tb-size={TCG_TB_MIB}"),
        },
        // `-cpu host` is what KVM guests should see; under TCG `max` gives
        // the emulated CPU every feature QEMU implements, so binaries built
        // for newer CPUs still run.
        "-cpu".into(),
        match spec.accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg => "max".into(),
        },
        "-smp".into(),
        spec.cpus.max(1).to_string(),
        "-m".into(),
        format!("{}M", spec.memory_mib.max(128)),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-chardev".into(),
        format!("file,id=console,path={}", path_opt(&spec.console)),
        "-serial".into(),
        "chardev:console".into(),
    ];
    match &spec.boot {
        Boot::MicroVm {
            boot_disk: Some(_), ..
        } => {}
        Boot::MicroVm {
            kernel,
            initramfs,
            params,
            boot_disk: None,
        } => a.extend([
            "-kernel".into(),
            kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            initramfs.to_string_lossy().into_owned(),
            "-append".into(),
            kernel_cmdline(params),
        ]),
        Boot::ImageKernel { kernel, initrd } => a.extend([
            "-kernel".into(),
            kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            initrd.to_string_lossy().into_owned(),
            "-append".into(),
            image_cmdline(),
        ]),
        Boot::Firmware => {}
    }
    if spec.share_root {
        // security_model=none: files keep their owners and modes as this
        // user sees them, so the VM's unprivileged job user reads what an
        // unprivileged local user could. multidevs=forbid: only the root
        // file system itself, not what is mounted on it (/proc, /home,
        // removable media), is reachable; init lays its own mounts over
        // opaque directories so it never looks below them.
        a.extend([
            "-fsdev".into(),
            format!("local,id={ROOT_TAG},path=/,security_model=none,readonly=on,multidevs=forbid"),
            "-device".into(),
            format!("virtio-9p-pci,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}"),
        ]);
    }
    match &spec.network {
        Some(net) => {
            // restrict=on: the VM reaches neither this machine nor any
            // network; the guestfwd rules (callback, gateway) are the
            // only exceptions.
            let cmd = relay_command(net, &net.target)?;
            let mut netdev = format!(
                "user,id=net0,restrict=on,guestfwd=tcp:{CALLBACK_GUEST_ADDR}:{CALLBACK_GUEST_PORT}-cmd:{}",
                opt(&cmd)
            );
            if let Some(gateway) = &net.egress {
                let cmd = relay_command(net, gateway)?;
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{CALLBACK_GUEST_ADDR}:{EGRESS_GUEST_PORT}-cmd:{}",
                    opt(&cmd)
                ));
            }
            a.extend([
                "-netdev".into(),
                netdev,
                "-device".into(),
                "virtio-net-pci,netdev=net0".into(),
                "-device".into(),
                "virtio-rng-pci".into(),
            ]);
        }
        None => a.extend(["-net".into(), "none".into()]),
    }
    if let Some(d) = &spec.root_disk {
        // cache=unsafe: the overlay dies with the VM (the image below it is
        // only read).
        a.extend([
            "-drive".into(),
            format!("file={},format=qcow2,if=virtio,cache=unsafe", path_opt(d)),
        ]);
    }
    if let Some(d) = &spec.workspace_disk {
        // cache=unsafe: the disk dies with the VM, so flushes need not
        // reach the host's disk.
        a.extend([
            "-drive".into(),
            format!("file={},format=raw,if=virtio,cache=unsafe", path_opt(d)),
        ]);
    }
    if let Boot::MicroVm {
        boot_disk: Some(d), ..
    } = &spec.boot
    {
        // The last PCI slot: the guest names virtio disks in slot order,
        // so the workspace disk stays /dev/vda. Read-only, and the only
        // device the BIOS may boot.
        a.extend([
            "-drive".into(),
            format!(
                "file={},if=none,id=bootdisk,format=raw,readonly=on",
                path_opt(d)
            ),
            "-device".into(),
            "virtio-blk-pci,drive=bootdisk,bootindex=0,addr=0x1f".into(),
        ]);
    }
    if let Some(b) = &spec.bootstrap {
        a.extend([
            "-fw_cfg".into(),
            format!("name={BOOTSTRAP_FW_CFG},file={}", path_opt(b)),
        ]);
    }
    if let Some(sock) = &spec.pool_port {
        // server=on,wait=off: QEMU listens and the VM runs without a host
        // end; the host connects when a job claims the VM. The socket sits
        // in the VM's 0700 directory, so only this user reaches it.
        a.extend([
            "-device".into(),
            "virtio-serial-pci,id=pool".into(),
            "-chardev".into(),
            format!(
                "socket,id=poolport,path={},server=on,wait=off",
                path_opt(sock)
            ),
            "-device".into(),
            format!("virtserialport,bus=pool.0,chardev=poolport,name={POOL_PORT}"),
        ]);
    }
    if let Some(q) = &spec.qmp {
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", path_opt(q)),
        ]);
    }
    let mut argv: Vec<OsString> = vec![spec.binary.clone().into()];
    argv.extend(a.into_iter().map(OsString::from));
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm-1".into(),
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            boot: Boot::MicroVm {
                kernel: "/boot/vmlinuz".into(),
                initramfs: "/d/qemu/initramfs.img".into(),
                params: vec!["delegate.workspace_size=1048576".into()],
                boot_disk: None,
            },
            console: "/d/qemu/vms/vm-1/console,log".into(),
            network: Some(Network {
                relay: "/opt/delegate guest".into(),
                target: "127.0.0.1:8765".into(),
                egress: None,
            }),
            bootstrap: Some("/d/qemu/vms/vm-1/bootstrap.json".into()),
            pool_port: None,
            qmp: Some("/d/qemu/vms/vm-1/qmp.sock".into()),
            share_root: true,
            workspace_disk: Some("/d/qemu/vms/vm-1/workspace.img".into()),
            root_disk: None,
        }
    }

    fn text(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_vm_reaches_only_its_callback_and_gets_its_bootstrap_by_fw_cfg() {
        let argv = text(&build(&spec()).unwrap());
        assert_eq!(after(&argv, "-accel"), ["tcg,tb-size=16"]);
        assert_eq!(after(&argv, "-name"), ["delegate-vm-1"]);
        assert_eq!(after(&argv, "-smp"), ["2"]);
        assert_eq!(after(&argv, "-m"), ["1024M"]);
        assert_eq!(
            after(&argv, "-netdev"),
            [
                "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:'/opt/delegate guest' relay 127.0.0.1:8765"
            ]
        );
        assert_eq!(
            after(&argv, "-fw_cfg"),
            ["name=opt/delegate/bootstrap,file=/d/qemu/vms/vm-1/bootstrap.json"]
        );
        // The token never goes on the kernel command line.
        let append = after(&argv, "-append")[0];
        assert!(!append.contains("bootstrap"), "{append}");
        assert!(append.contains("delegate.workspace_size=1048576"));
        // Commas in paths are doubled, not option separators.
        assert_eq!(
            after(&argv, "-chardev"),
            ["file,id=console,path=/d/qemu/vms/vm-1/console,,log"]
        );
        assert!(after(&argv, "-fsdev")[0].contains("readonly=on"));
        assert!(argv.contains(&"-no-reboot".to_string()));
        assert_eq!(
            after(&argv, "-drive"),
            ["file=/d/qemu/vms/vm-1/workspace.img,format=raw,if=virtio,cache=unsafe"]
        );
    }

    #[test]
    fn a_micro_vm_with_a_boot_disk_boots_it_read_only_after_its_workspace() {
        let mut s = spec();
        s.boot = Boot::MicroVm {
            kernel: "/boot/vmlinuz".into(),
            initramfs: "/d/qemu/initramfs.img".into(),
            params: vec!["delegate.workspace_disk".into()],
            boot_disk: Some("/d/qemu/boot-1.img".into()),
        };
        let argv = text(&build(&s).unwrap());
        for flag in ["-kernel", "-initrd", "-append"] {
            assert!(
                after(&argv, flag).is_empty(),
                "{flag}: QEMU would keep a copy"
            );
        }
        let drives = after(&argv, "-drive");
        assert_eq!(
            *drives.last().unwrap(),
            "file=/d/qemu/boot-1.img,if=none,id=bootdisk,format=raw,readonly=on"
        );
        assert!(drives[0].contains("workspace.img"), "{drives:?}");
        assert!(
            after(&argv, "-device")
                .contains(&"virtio-blk-pci,drive=bootdisk,bootindex=0,addr=0x1f")
        );
    }

    #[test]
    fn the_probe_has_no_network_share_or_secrets() {
        let mut s = spec();
        s.network = None;
        s.bootstrap = None;
        s.qmp = None;
        s.share_root = false;
        s.workspace_disk = None;
        let argv = text(&build(&s).unwrap());
        assert_eq!(after(&argv, "-net"), ["none"]);
        assert!(after(&argv, "-fw_cfg").is_empty());
        assert!(after(&argv, "-fsdev").is_empty());
    }

    #[test]
    fn a_disk_image_boots_its_overlay_with_the_same_bootstrap_and_network() {
        let mut s = spec();
        s.share_root = false;
        s.workspace_disk = None;
        s.root_disk = Some("/d/qemu/vms/vm-1/root.qcow2".into());
        s.boot = Boot::ImageKernel {
            kernel: "/boot/vmlinuz".into(),
            initrd: "/boot/initrd.img".into(),
        };
        let argv = text(&build(&s).unwrap());
        assert_eq!(
            after(&argv, "-drive"),
            ["file=/d/qemu/vms/vm-1/root.qcow2,format=qcow2,if=virtio,cache=unsafe"]
        );
        assert_eq!(after(&argv, "-initrd"), ["/boot/initrd.img"]);
        let append = after(&argv, "-append")[0];
        assert!(append.contains("root=/dev/vda"), "{append}");
        assert!(!append.contains("rdinit"), "the image's own init: {append}");
        assert!(after(&argv, "-fsdev").is_empty(), "no host root share");
        assert_eq!(
            after(&argv, "-fw_cfg"),
            ["name=opt/delegate/bootstrap,file=/d/qemu/vms/vm-1/bootstrap.json"]
        );
        assert!(after(&argv, "-netdev")[0].contains("restrict=on"));
        s.boot = Boot::Firmware;
        let argv = text(&build(&s).unwrap());
        assert!(after(&argv, "-kernel").is_empty(), "its own boot loader");
    }

    #[test]
    fn a_pool_vm_has_a_bootstrap_port_and_no_fw_cfg_entry() {
        let mut s = spec();
        s.bootstrap = None;
        s.pool_port = Some("/d/qemu/vms/vm-1/pool,port.sock".into());
        let argv = text(&build(&s).unwrap());
        assert!(after(&argv, "-fw_cfg").is_empty());
        assert_eq!(
            after(&argv, "-chardev")[1],
            "socket,id=poolport,path=/d/qemu/vms/vm-1/pool,,port.sock,server=on,wait=off"
        );
        let devices = after(&argv, "-device");
        assert!(
            devices.contains(&"virtio-serial-pci,id=pool"),
            "{devices:?}"
        );
        assert!(
            devices.contains(
                &"virtserialport,bus=pool.0,chardev=poolport,name=org.delegate.bootstrap"
            ),
            "{devices:?}"
        );
        let append = after(&argv, "-append")[0];
        assert!(!append.contains("bootstrap"), "{append}");
    }

    #[test]
    fn a_relay_path_with_a_quote_is_refused() {
        let mut s = spec();
        s.network = Some(Network {
            relay: "/tmp/it's".into(),
            target: "127.0.0.1:1".into(),
            egress: None,
        });
        assert!(build(&s).is_err());
    }

    #[test]
    fn the_gateway_is_the_second_and_last_forward() {
        let mut s = spec();
        if let Some(net) = &mut s.network {
            net.egress = Some("127.0.0.1:8766".into());
        }
        let argv = text(&build(&s).unwrap());
        assert_eq!(
            after(&argv, "-netdev"),
            [
                "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:'/opt/delegate guest' relay 127.0.0.1:8765,guestfwd=tcp:10.0.2.100:3128-cmd:'/opt/delegate guest' relay 127.0.0.1:8766"
            ]
        );
        if let Some(net) = &mut s.network {
            net.egress = Some("127.0.0.1:1;x".into());
        }
        assert!(build(&s).is_err());
    }
}
