//! Finding the bootstrap a provider left for this VM, in order: an explicit
//! file, `/run/delegate/bootstrap.json`, QEMU's fw_cfg entry
//! `opt/delegate/bootstrap`, the SMBIOS system serial. A pooled `qemu` VM
//! has none of them and waits on a virtio-serial port instead
//! (`pool_port.rs`), which `delegate-guest boot` turns to when this search
//! finds nothing.
//!
//! Bootstrap files hold the job's only credential, so a file is refused when
//! group or others have any permission on it (`mode & 0o077`), or when it is
//! owned by neither root nor the runner's own user: a token others can read
//! is leaked, and a file someone else owns may have been planted to make the
//! runner report to another host. This is the rule ssh applies to keys.
//! Firmware sources (fw_cfg, SMBIOS) are set by the hypervisor and are not
//! checked. An SMBIOS serial can carry a whole bootstrap (JSON or base64 of
//! it); the Proxmox provider puts only the job id there, which names the job
//! but cannot authenticate it: that case is [`CallbackError::TokenMissing`].

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use delegate_proto::Bootstrap;
use delegate_proto::bootstrap::BootstrapError;

use super::CallbackError;

/// No bootstrap is anywhere near this large.
const MAX_BOOTSTRAP_BYTES: u64 = 64 * 1024;

/// Serials that firmware puts in unconfigured machines.
const PLACEHOLDER_SERIALS: &[&str] = &[
    "",
    "0",
    "none",
    "not specified",
    "not applicable",
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
];

/// Where a bootstrap was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapSource {
    /// A file (`--bootstrap FILE` or `/run/delegate/bootstrap.json`).
    File(PathBuf),
    /// The QEMU fw_cfg entry `opt/delegate/bootstrap`.
    FwCfg,
    /// The SMBIOS system serial number.
    Smbios,
    /// The virtio-serial port of a pooled VM (its device).
    PoolPort(PathBuf),
}

impl std::fmt::Display for BootstrapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapSource::File(p) => write!(f, "{}", p.display()),
            BootstrapSource::FwCfg => f.write_str("QEMU fw_cfg opt/delegate/bootstrap"),
            BootstrapSource::Smbios => f.write_str("SMBIOS serial"),
            BootstrapSource::PoolPort(p) => write!(f, "pool port {}", p.display()),
        }
    }
}

/// The places searched after an explicit file, in order. `Default` gives
/// the real ones; tests point them at temporary files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPaths {
    /// The file a provider writes (Proxmox guest agent, local provider).
    pub run_file: PathBuf,
    /// QEMU's fw_cfg entry for `opt/delegate/bootstrap`.
    pub fw_cfg: PathBuf,
    /// The SMBIOS system serial.
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

/// Finds the bootstrap in the real places; see [`find_bootstrap_in`].
pub fn find_bootstrap(
    explicit: Option<&Path>,
) -> Result<(Bootstrap, BootstrapSource), CallbackError> {
    find_bootstrap_in(explicit, &BootstrapPaths::default())
}

/// Finds the bootstrap. With `explicit`, only that file is read. Otherwise
/// the first source that exists decides: a present but invalid source is an
/// error, never a reason to fall through to a weaker one.
pub fn find_bootstrap_in(
    explicit: Option<&Path>,
    paths: &BootstrapPaths,
) -> Result<(Bootstrap, BootstrapSource), CallbackError> {
    if let Some(path) = explicit {
        return match read_private_file(path)? {
            Some(bytes) => Ok((parse(&bytes, path)?, BootstrapSource::File(path.into()))),
            None => Err(CallbackError::NoBootstrap {
                tried: vec![format!("{}: no such file", path.display())],
            }),
        };
    }
    let mut tried = Vec::new();
    match read_private_file(&paths.run_file)? {
        Some(bytes) => {
            let b = parse(&bytes, &paths.run_file)?;
            return Ok((b, BootstrapSource::File(paths.run_file.clone())));
        }
        None => tried.push(format!("{}: not present", paths.run_file.display())),
    }
    match read_firmware(&paths.fw_cfg) {
        Ok(Some(bytes)) => {
            let b =
                Bootstrap::from_json(&bytes).map_err(|error| bad(BootstrapSource::FwCfg, error))?;
            return Ok((b, BootstrapSource::FwCfg));
        }
        Ok(None) => tried.push(format!("fw_cfg ({}): not present", paths.fw_cfg.display())),
        Err(why) => tried.push(format!("fw_cfg ({}): {why}", paths.fw_cfg.display())),
    }
    match read_firmware(&paths.smbios_serial) {
        Ok(Some(bytes)) => match parse_serial(&bytes)? {
            Serial::Bootstrap(b) => return Ok((b, BootstrapSource::Smbios)),
            Serial::JobId(job_id) => {
                return Err(CallbackError::TokenMissing {
                    job_id,
                    run_file: paths.run_file.clone(),
                });
            }
            Serial::Other => tried.push(format!(
                "SMBIOS serial ({}): holds no bootstrap",
                paths.smbios_serial.display()
            )),
        },
        Ok(None) => tried.push(format!(
            "SMBIOS serial ({}): not present",
            paths.smbios_serial.display()
        )),
        Err(why) => tried.push(format!(
            "SMBIOS serial ({}): {why}",
            paths.smbios_serial.display()
        )),
    }
    Err(CallbackError::NoBootstrap { tried })
}

/// [`find_bootstrap_in`], retried every 200 ms for up to `within` while no
/// bootstrap is there yet or the file is still being written (a provider's
/// write may race the start of `delegate-guest boot`).
pub async fn wait_for_bootstrap(
    explicit: Option<&Path>,
    paths: &BootstrapPaths,
    within: Duration,
) -> Result<(Bootstrap, BootstrapSource), CallbackError> {
    let deadline = Instant::now() + within;
    loop {
        match find_bootstrap_in(explicit, paths) {
            Err(e) if may_appear(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

fn may_appear(err: &CallbackError) -> bool {
    match err {
        CallbackError::NoBootstrap { .. } | CallbackError::TokenMissing { .. } => true,
        // An empty or cut-off document: its writer is not done.
        CallbackError::BadBootstrap {
            error: BootstrapError::Json(e),
            ..
        } => e.is_eof(),
        _ => false,
    }
}

fn bad(source: BootstrapSource, error: BootstrapError) -> CallbackError {
    CallbackError::BadBootstrap {
        source_name: source.to_string(),
        error,
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<Bootstrap, CallbackError> {
    Bootstrap::from_json(bytes).map_err(|error| bad(BootstrapSource::File(path.into()), error))
}

/// Reads a bootstrap file after checking who may read it. `None` when it
/// does not exist.
fn read_private_file(path: &Path) -> Result<Option<Vec<u8>>, CallbackError> {
    let io = |source| CallbackError::Io {
        op: "reading bootstrap",
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    // The opened file's metadata: what we check is what we read.
    let meta = file.metadata().map_err(io)?;
    let insecure = |reason: String| CallbackError::InsecureBootstrap {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(insecure("not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(insecure(format!(
            "owned by uid {}, neither root nor this runner (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(insecure(format!(
            "mode {mode:04o} lets other users at the job token; it must be 0600 or 0400"
        )));
    }
    read_capped(file).map(Some).map_err(io)
}

/// Reads a firmware-provided file. `Ok(None)` when absent, `Err` with a
/// reason when present but unreadable (typically: not root).
fn read_firmware(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::File::open(path) {
        Ok(f) => read_capped(f)
            .map(Some)
            .map_err(|e| format!("cannot read: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

fn read_capped(file: std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_BOOTSTRAP_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BOOTSTRAP_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_BOOTSTRAP_BYTES} bytes; not a bootstrap"),
        ));
    }
    Ok(bytes)
}

/// What an SMBIOS serial holds.
#[derive(Debug)]
enum Serial {
    Bootstrap(Bootstrap),
    JobId(String),
    Other,
}

/// A serial is a bootstrap as JSON, base64 of one, a job id (a UUID, bare or
/// as `delegate-job=<id>`), or anything else.
fn parse_serial(raw: &[u8]) -> Result<Serial, CallbackError> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if text.starts_with('{') {
        return Bootstrap::from_json(text.as_bytes())
            .map(Serial::Bootstrap)
            .map_err(|error| bad(BootstrapSource::Smbios, error));
    }
    if PLACEHOLDER_SERIALS.contains(&text.to_ascii_lowercase().as_str()) {
        return Ok(Serial::Other);
    }
    let id = ["delegate-job=", "delegate-job:", "job="]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text);
    if is_uuid(id) {
        return Ok(Serial::JobId(id.to_string()));
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    if let Some(decoded) = engines.iter().find_map(|e| e.decode(text).ok())
        && decoded.trim_ascii_start().starts_with(b"{")
    {
        return Bootstrap::from_json(&decoded)
            .map(Serial::Bootstrap)
            .map_err(|error| bad(BootstrapSource::Smbios, error));
    }
    Ok(Serial::Other)
}

/// `8-4-4-4-12` hex digits, the form of the host's job ids.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b";

    fn json() -> String {
        format!(
            r#"{{"v":1,"job_id":"{ID}","callback_url":"http://10.0.2.2:8765","token":"{}"}}"#,
            "a".repeat(64)
        )
    }

    #[test]
    fn serials_are_classified() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(json());
        let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json());
        for s in [json(), b64, b64_url, format!("{}\n", json())] {
            assert!(
                matches!(parse_serial(s.as_bytes()), Ok(Serial::Bootstrap(_))),
                "{s}"
            );
        }
        for s in [ID.to_string(), format!("delegate-job={ID}\n")] {
            match parse_serial(s.as_bytes()) {
                Ok(Serial::JobId(id)) => assert_eq!(id, ID),
                other => panic!("{s}: {other:?}"),
            }
        }
        for s in ["Not Specified", "0", "", "VMware-56 4d", "abcd"] {
            assert!(
                matches!(parse_serial(s.as_bytes()), Ok(Serial::Other)),
                "{s}"
            );
        }
        // JSON that is not a valid bootstrap is an error, not "no bootstrap".
        assert!(parse_serial(br#"{"v":9}"#).is_err());
    }
}
