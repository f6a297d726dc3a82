//! [`SettingsBuilder`]: the settings tests and benchmarks start from, made
//! from the defaults alone. Nothing is read from the process environment,
//! so a developer's `DELEGATE_*` variables never change what a test runs with.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};

use super::RawSettings;
use super::table::SettingsOnly;
use super::{ProviderKind, Settings};
use crate::provider::local::LocalSettings;
use crate::resolve::{FixedMachine, SettingsError};

/// Settings with every default, the data under a given directory and the
/// callback API on 127.0.0.1, port 0 (the engine fills in the port it got).
#[derive(Debug, Clone)]
pub struct SettingsBuilder {
    data_dir: PathBuf,
    local: Option<LocalSettings>,
}

impl Settings {
    /// Starts test settings whose data lives under `data_dir` (absolute).
    pub fn builder(data_dir: &Path) -> SettingsBuilder {
        SettingsBuilder {
            data_dir: data_dir.to_path_buf(),
            local: None,
        }
    }
}

impl SettingsBuilder {
    /// Gives the local provider's settings, for code that builds the
    /// provider from the settings (tests that bring their own provider
    /// need none).
    pub fn local(mut self, local: LocalSettings) -> Self {
        self.local = Some(local);
        self
    }

    /// Resolves the settings. Fails only on a relative data directory.
    pub fn build(self) -> Result<Settings, SettingsError> {
        let mut raw = defaults()?;
        raw.callback_host = "127.0.0.1".into();
        raw.callback_port = 0;
        raw.data_dir = Some(self.data_dir);
        // A machine with nothing on it: the defaults stand, nothing is found.
        let mut settings =
            Settings::resolve_common(&raw, ProviderKind::Local, &FixedMachine::default())?;
        settings.local = self.local;
        Ok(settings)
    }
}

/// The settings' flags with every `env` binding removed, so parsing reads
/// no variable.
fn defaults_command() -> clap::Command {
    SettingsOnly::command().mut_args(|a| a.env(None::<&'static str>))
}

/// [`RawSettings`] at their defaults: an empty command line parsed by
/// [`defaults_command`].
fn defaults() -> Result<RawSettings, SettingsError> {
    let parsed = defaults_command()
        .try_get_matches_from(["delegate-host"])
        .and_then(|m| SettingsOnly::from_arg_matches(&m));
    parsed.map(|d| d.raw).map_err(|e| SettingsError::Invalid {
        setting: "(defaults)",
        message: format!("the built-in defaults do not parse: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_variable_can_reach_the_defaults() {
        // Every setting has a variable on the real command line...
        let real = SettingsOnly::command();
        let bound = real.get_arguments().filter(|a| a.get_env().is_some());
        assert_eq!(bound.count(), real.get_arguments().count());
        // ...and none on the one the builder parses.
        let cmd = defaults_command();
        let unbound: Vec<_> = cmd
            .get_arguments()
            .filter(|a| a.get_env().is_some())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(unbound.is_empty(), "{unbound:?}");
    }

    #[test]
    fn builder_gives_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::builder(dir.path()).build().unwrap();
        assert_eq!(s.callback_bind.to_string(), "127.0.0.1:0");
        assert_eq!(s.data_dir, dir.path());
        assert_eq!(s.provider, ProviderKind::Local);
        assert_eq!(s.max_running, 4);
        assert_eq!(s.default_memory, 2 << 30);
        assert!(s.http_token.is_none() && s.local.is_none() && s.proxmox.is_none());
        let raw = defaults().unwrap();
        assert!(raw.local.guest_bin.is_none() && raw.proxmox.url.is_none());
    }

    #[test]
    fn a_relative_data_dir_is_refused() {
        let err = Settings::builder(Path::new("rel")).build().unwrap_err();
        assert!(err.to_string().starts_with("DELEGATE_DATA_DIR"), "{err}");
    }
}
