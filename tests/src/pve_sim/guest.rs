//! What runs "inside" a simulated VM: when the bootstrap file is written
//! through the guest agent, the template's systemd `.path` unit would start
//! `delegate-guest boot`; here we start that same binary as a real process
//! in its own process group, with the VM's directory standing in for its
//! disk. Stopping or destroying the VM kills the whole group, as pulling the
//! plug would.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// How the simulator starts a guest runner.
#[derive(Debug, Clone)]
pub struct GuestCommand {
    /// The program (`delegate-guest`).
    pub program: PathBuf,
    /// Arguments; `{bootstrap}` is replaced by the bootstrap file's path and
    /// `{root}` by the VM's directory.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl GuestCommand {
    /// `delegate-guest boot --bootstrap {bootstrap}` for the given binary.
    pub fn delegate_guest(program: impl Into<PathBuf>) -> Self {
        GuestCommand {
            program: program.into(),
            args: vec!["boot".into(), "--bootstrap".into(), "{bootstrap}".into()],
            env: Vec::new(),
        }
    }
}

/// A running guest process (its process group).
#[derive(Debug)]
pub struct GuestProcess {
    /// Process id (also the group id).
    pub pid: u32,
    child: Option<tokio::process::Child>,
}

impl GuestProcess {
    /// Starts the runner for a VM.
    pub fn spawn(cmd: &GuestCommand, root: &Path, bootstrap: &Path) -> std::io::Result<Self> {
        let fill = |a: &String| {
            a.replace("{bootstrap}", &bootstrap.to_string_lossy())
                .replace("{root}", &root.to_string_lossy())
        };
        let log = std::fs::File::create(root.join("guest.log"))?;
        let mut c = tokio::process::Command::new(&cmd.program);
        c.args(cmd.args.iter().map(fill))
            .envs(cmd.env.iter().map(|(k, v)| (k.clone(), fill(v))))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        let child = c.spawn()?;
        let pid = child.id().unwrap_or(0);
        Ok(GuestProcess {
            pid,
            child: Some(child),
        })
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the whole process group and reaps the leader in the background.
    pub fn kill(mut self) {
        if self.pid > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.child.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            } else {
                let _ = child.start_kill();
            }
        }
    }
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        if self.child.is_some() && self.pid > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Writes a file into the VM's directory as the guest agent would
/// (`/run/...` lands in `<root>/run/...`), mode 0600, parents 0700.
pub fn write_guest_file(root: &Path, file: &str, content: &[u8]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let rel = file.trim_start_matches('/');
    if rel.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad path {file:?}"),
        ));
    }
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let tmp = path.with_extension("tmp-agent");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
