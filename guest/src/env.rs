//! The agent's environment: a clean base, the agent type's defaults, then
//! the manifest's `env`. Nothing of the runner's own environment leaks in
//! (no host tokens, no `LD_PRELOAD`, no proxy settings by accident).

use std::collections::BTreeMap;
use std::path::Path;

/// `PATH` unless the manifest sets one.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `LANG` unless the manifest sets one.
pub const BASE_LANG: &str = "C.UTF-8";

/// Inputs to [`build`]. Paths are as the agent sees them (a standalone
/// run may show the agent its workspace at `/workspace`).
#[derive(Debug, Clone, Copy)]
pub struct EnvInputs<'a> {
    /// The agent's workspace, for `WORKSPACE`.
    pub workspace: &'a Path,
    /// The agent's HOME.
    pub home: &'a Path,
    /// The agent's TMPDIR.
    pub tmp: &'a Path,
    /// The user the agent runs as, for `USER` and `LOGNAME`.
    pub user: Option<&'a str>,
    /// Set unless the manifest sets them (e.g. `CLAUDE_CODE_MAX_RETRIES`).
    pub defaults: &'a [(String, String)],
    /// The manifest's `env`; wins over everything else.
    pub manifest: &'a BTreeMap<String, String>,
}

/// The complete environment of the agent.
pub fn build(i: EnvInputs<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), BASE_PATH.to_string());
    env.insert("HOME".to_string(), i.home.display().to_string());
    env.insert("TMPDIR".to_string(), i.tmp.display().to_string());
    env.insert("LANG".to_string(), BASE_LANG.to_string());
    env.insert("WORKSPACE".to_string(), i.workspace.display().to_string());
    if let Some(user) = i.user {
        env.insert("USER".to_string(), user.to_string());
        env.insert("LOGNAME".to_string(), user.to_string());
    }
    for (k, v) in i.defaults {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in i.manifest {
        env.insert(k.clone(), v.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_then_defaults_then_manifest() {
        let manifest = BTreeMap::from([
            ("LANG".to_string(), "de_DE.UTF-8".to_string()),
            ("CLAUDE_CODE_MAX_RETRIES".to_string(), "7".to_string()),
            ("X".to_string(), "1".to_string()),
        ]);
        let defaults = vec![
            ("CLAUDE_CODE_MAX_RETRIES".to_string(), "2".to_string()),
            ("OTHER".to_string(), "d".to_string()),
        ];
        let env = build(EnvInputs {
            workspace: Path::new("/w"),
            home: Path::new("/w/.delegate/home"),
            tmp: Path::new("/w/.delegate/tmp"),
            user: Some("delegate"),
            defaults: &defaults,
            manifest: &manifest,
        });
        assert_eq!(env["PATH"], BASE_PATH);
        assert_eq!(env["HOME"], "/w/.delegate/home");
        assert_eq!(env["TMPDIR"], "/w/.delegate/tmp");
        assert_eq!(env["LANG"], "de_DE.UTF-8");
        assert_eq!(env["CLAUDE_CODE_MAX_RETRIES"], "7");
        assert_eq!(env["OTHER"], "d");
        assert_eq!(env["USER"], "delegate");
        assert_eq!(env["WORKSPACE"], "/w");
        // The base (PATH, HOME, TMPDIR, LANG, WORKSPACE, USER, LOGNAME)
        // and the three defaults and manifest variables.
        assert_eq!(env.len(), 10);
    }

    #[test]
    fn nothing_from_the_runner_leaks() {
        let env = build(EnvInputs {
            workspace: Path::new("/workspace"),
            home: Path::new("/h"),
            tmp: Path::new("/t"),
            user: None,
            defaults: &[],
            manifest: &BTreeMap::new(),
        });
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["HOME", "LANG", "PATH", "TMPDIR", "WORKSPACE"]);
    }
}
