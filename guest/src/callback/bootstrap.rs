//! Finding the bootstrap a provider left for this VM.

use std::path::{Path, PathBuf};

use delegate_proto::Bootstrap;

use super::CallbackError;

/// Where a bootstrap was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapSource {
    /// A file (`--bootstrap FILE` or `/run/delegate/bootstrap.json`).
    File(PathBuf),
    /// The QEMU fw_cfg entry `opt/delegate/bootstrap`.
    FwCfg,
    /// The SMBIOS system serial number.
    Smbios,
}

/// The places searched, in order after an explicit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPaths {
    /// The file a provider writes (Proxmox guest agent).
    pub run_file: PathBuf,
    /// QEMU's fw_cfg entry.
    pub fw_cfg: PathBuf,
    /// The SMBIOS serial.
    pub smbios_serial: PathBuf,
}

impl Default for BootstrapPaths {
    fn default() -> Self {
        BootstrapPaths {
            run_file: PathBuf::from("/run/delegate/bootstrap.json"),
            fw_cfg: PathBuf::from("/sys/firmware/qemu_fw_cfg/by_name/opt/delegate/bootstrap/raw"),
            smbios_serial: PathBuf::from("/sys/class/dmi/id/product_serial"),
        }
    }
}

/// Finds the bootstrap in the real places.
pub fn find_bootstrap(
    explicit: Option<&Path>,
) -> Result<(Bootstrap, BootstrapSource), CallbackError> {
    find_bootstrap_in(explicit, &BootstrapPaths::default())
}

/// Finds the bootstrap in the given places.
pub fn find_bootstrap_in(
    _explicit: Option<&Path>,
    _paths: &BootstrapPaths,
) -> Result<(Bootstrap, BootstrapSource), CallbackError> {
    unimplemented!()
}
