//! What the host tells init on the kernel command line: only sizes and
//! paths, never a secret (the bootstrap comes through fw_cfg, which other
//! users of the host cannot read, while `/proc/<qemu pid>/cmdline` is
//! world-readable).

/// Init's settings, from `delegate.*` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitConfig {
    /// Size of the `/workspace` tmpfs in bytes (`delegate.workspace_size`);
    /// `None` leaves the kernel's default (half the RAM).
    pub workspace_size: Option<u64>,
    /// Host paths covered by an empty directory in the VM
    /// (`delegate.hide=`, repeated): the host's data directory.
    pub hide: Vec<String>,
    /// `delegate.probe`: the host's KVM probe; power off at once.
    pub probe: bool,
    /// `delegate.workspace_disk`: `/workspace` is the ext4 disk `/dev/vda`
    /// (else a tmpfs).
    pub workspace_disk: bool,
}

impl InitConfig {
    /// Parses `/proc/cmdline`. Unknown parameters are the kernel's.
    pub fn parse(cmdline: &str) -> Result<InitConfig, String> {
        let mut cfg = InitConfig::default();
        for word in cmdline.split_whitespace() {
            if word == "delegate.probe" {
                cfg.probe = true;
            } else if word == "delegate.workspace_disk" {
                cfg.workspace_disk = true;
            } else if let Some(v) = word.strip_prefix("delegate.workspace_size=") {
                let n = v
                    .parse::<u64>()
                    .map_err(|_| format!("delegate.workspace_size={v} is not a byte count"))?;
                cfg.workspace_size = Some(n);
            } else if let Some(v) = word.strip_prefix("delegate.hide=") {
                if !v.starts_with('/') || v.split('/').any(|c| c == "..") {
                    return Err(format!("delegate.hide={v} is not an absolute path"));
                }
                cfg.hide.push(v.to_string());
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_parameters_and_ignores_the_kernels() {
        let cfg = InitConfig::parse(
            "console=ttyS0 delegate.workspace_size=1048576 quiet delegate.hide=/var/lib/d \
             delegate.hide=/root/.local/share/delegate\n",
        )
        .unwrap();
        assert_eq!(cfg.workspace_size, Some(1 << 20));
        assert_eq!(cfg.hide, ["/var/lib/d", "/root/.local/share/delegate"]);
        assert_eq!(InitConfig::parse("quiet").unwrap(), InitConfig::default());
        assert!(InitConfig::parse("quiet delegate.probe").unwrap().probe);
        assert!(
            InitConfig::parse("delegate.workspace_disk")
                .unwrap()
                .workspace_disk
        );
        assert!(InitConfig::parse("delegate.workspace_size=1G").is_err());
        assert!(InitConfig::parse("delegate.hide=relative").is_err());
        assert!(InitConfig::parse("delegate.hide=/a/../etc").is_err());
    }
}
