//! Moving over from mcp-proxmox-admin: the original delegation server ran
//! that MCP server (`node $PROXMOX_ADMIN_PATH`) in its own working directory
//! and environment, and it read its settings from, highest priority first,
//! the `MCP_SETTINGS` JSON, the `PROXMOX_HOST`/`PROXMOX_PORT`/
//! `PROXMOX_API_TOKEN_ID`/`PROXMOX_API_TOKEN_SECRET`/`PROXMOX_VERIFY_SSL`
//! variables, and `proxmox-config.json`. We read the same places (plus the
//! package directory under `PROXMOX_ADMIN_PATH`) so nobody retypes a token,
//! and record which one supplied each value.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::resolve::{Machine, SettingsError};

/// What was found of mcp-proxmox-admin's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// `https://host:port`.
    pub url: Option<String>,
    /// Where the host came from.
    pub url_origin: String,
    /// `USER@REALM!NAME`.
    pub token_id: Option<String>,
    /// The token secret.
    pub token_secret: Option<String>,
    /// Where the token came from.
    pub token_origin: String,
    /// Its `verifySsl`.
    pub verify_ssl: Option<bool>,
}

/// The fields of mcp-proxmox-admin's settings we use; the rest (SSH, safe
/// mode, ...) has no meaning here and is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminSettings {
    host: Option<String>,
    port: Option<serde_json::Value>,
    api_token_id: Option<String>,
    api_token_secret: Option<String>,
    verify_ssl: Option<serde_json::Value>,
}

struct Source {
    origin: String,
    settings: AdminSettings,
}

/// Looks for mcp-proxmox-admin's configuration; `None` when there is none.
pub fn discover(
    admin_path: Option<&Path>,
    env: &dyn Machine,
) -> Result<Option<AdminConfig>, SettingsError> {
    // Highest priority first, as mcp-proxmox-admin merges them.
    let mut sources = Vec::new();
    if let Some(json) = env.var("MCP_SETTINGS") {
        let settings: AdminSettings =
            serde_json::from_str(&json).map_err(|e| SettingsError::Migration {
                origin: "MCP_SETTINGS".into(),
                message: format!("not valid JSON settings: {e}"),
            })?;
        sources.push(Source {
            origin: "the MCP_SETTINGS variable".into(),
            settings,
        });
    }
    let from_env = AdminSettings {
        host: env.var("PROXMOX_HOST"),
        port: env.var("PROXMOX_PORT").map(serde_json::Value::String),
        api_token_id: env.var("PROXMOX_API_TOKEN_ID"),
        api_token_secret: env.var("PROXMOX_API_TOKEN_SECRET"),
        verify_ssl: env.var("PROXMOX_VERIFY_SSL").map(serde_json::Value::String),
    };
    sources.push(Source {
        origin: "the PROXMOX_HOST/PROXMOX_API_TOKEN_* variables".into(),
        settings: from_env,
    });
    for path in config_candidates(admin_path, env) {
        match env.read(&path) {
            Ok(bytes) => {
                let settings: AdminSettings =
                    serde_json::from_slice(&bytes).map_err(|e| SettingsError::Migration {
                        origin: path.display().to_string(),
                        message: format!("not valid JSON settings: {e}"),
                    })?;
                sources.push(Source {
                    origin: path.display().to_string(),
                    settings,
                });
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SettingsError::Migration {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    if admin_path.is_some() && sources.len() == 1 && is_empty(&sources[0].settings) {
        return Err(SettingsError::Migration {
            origin: "PROXMOX_ADMIN_PATH".into(),
            message: "is set but no proxmox-config.json was found beside it or in the working \
                      directory, and neither MCP_SETTINGS nor PROXMOX_HOST is set"
                .into(),
        });
    }
    merge(sources)
}

fn is_empty(s: &AdminSettings) -> bool {
    s.host.is_none() && s.api_token_id.is_none() && s.api_token_secret.is_none()
}

/// `proxmox-config.json` in the package directory of `PROXMOX_ADMIN_PATH`
/// (which names `.../dist/index.js` or the package itself), then the working
/// directory, where the original server ran it.
fn config_candidates(admin_path: Option<&Path>, env: &dyn Machine) -> Vec<PathBuf> {
    const NAME: &str = "proxmox-config.json";
    let mut out = Vec::new();
    if let Some(p) = admin_path {
        if p.file_name().is_some_and(|n| n == NAME) {
            out.push(p.to_path_buf());
        }
        let mut dir = if p.extension().is_some() {
            p.parent().map(Path::to_path_buf)
        } else {
            Some(p.to_path_buf())
        };
        // dist/index.js -> dist -> package root: two levels are enough.
        for _ in 0..2 {
            let Some(d) = dir else { break };
            out.push(d.join(NAME));
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    if let Some(cwd) = env.cwd() {
        out.push(cwd.join(NAME));
    }
    out.dedup();
    out
}

fn port_of(v: &serde_json::Value) -> Option<u16> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bool_of(v: &serde_json::Value) -> Option<bool> {
    match v {
        serde_json::Value::Bool(b) => Some(*b),
        // mcp-proxmox-admin reads the variable as `=== "true"`.
        serde_json::Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
        _ => None,
    }
}

fn merge(sources: Vec<Source>) -> Result<Option<AdminConfig>, SettingsError> {
    let mut out = AdminConfig::default();
    let mut found = false;
    let host = sources
        .iter()
        .find_map(|s| s.settings.host.clone().map(|h| (h, s.origin.clone())));
    if let Some((host, origin)) = host {
        found = true;
        let port = sources
            .iter()
            .find_map(|s| s.settings.port.as_ref())
            .map(|p| {
                port_of(p).ok_or_else(|| SettingsError::Migration {
                    origin: origin.clone(),
                    message: format!("port {p} is not a port number"),
                })
            })
            .transpose()?
            .unwrap_or(8006);
        let host = host.trim().trim_end_matches('/');
        let url = if host.starts_with("https://") || host.starts_with("http://") {
            host.to_string()
        } else if host.contains(':') && !host.starts_with('[') && host.matches(':').count() > 1 {
            format!("https://[{host}]:{port}")
        } else if host.contains(':') {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        };
        out.url = Some(url);
        out.url_origin = origin;
    }
    if let Some(s) = sources.iter().find(|s| s.settings.api_token_id.is_some()) {
        found = true;
        out.token_id = s.settings.api_token_id.clone();
        out.token_secret = s.settings.api_token_secret.clone().or_else(|| {
            sources
                .iter()
                .find_map(|o| o.settings.api_token_secret.clone())
        });
        out.token_origin = s.origin.clone();
    }
    out.verify_ssl = sources
        .iter()
        .find_map(|s| s.settings.verify_ssl.as_ref().and_then(bool_of));
    Ok(found.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::FixedMachine;

    #[test]
    fn nothing_found_is_none() {
        let env = FixedMachine::default();
        assert_eq!(discover(None, &env).unwrap(), None);
    }

    #[test]
    fn file_beside_admin_package() {
        let mut env = FixedMachine::default();
        env.files.insert(
            PathBuf::from("/opt/mcp-proxmox-admin/proxmox-config.json"),
            br#"{"host":"10.1.2.3","port":8007,"apiTokenId":"u@pam!t","apiTokenSecret":"s-1","verifySsl":false,"sshUser":"root"}"#.to_vec(),
        );
        let cfg = discover(
            Some(Path::new("/opt/mcp-proxmox-admin/dist/index.js")),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(cfg.url.as_deref(), Some("https://10.1.2.3:8007"));
        assert_eq!(cfg.token_id.as_deref(), Some("u@pam!t"));
        assert_eq!(cfg.token_secret.as_deref(), Some("s-1"));
        assert!(
            cfg.token_origin
                .contains("/opt/mcp-proxmox-admin/proxmox-config.json")
        );
        assert_eq!(cfg.verify_ssl, Some(false));
    }

    #[test]
    fn mcp_settings_beats_env_beats_file() {
        let mut env = FixedMachine {
            cwd: Some(PathBuf::from("/work")),
            ..FixedMachine::default()
        };
        env.files.insert(
            PathBuf::from("/work/proxmox-config.json"),
            br#"{"host":"file-host","apiTokenId":"f@pve!f","apiTokenSecret":"fs"}"#.to_vec(),
        );
        env.vars.insert("PROXMOX_HOST".into(), "env-host".into());
        env.vars.insert(
            "MCP_SETTINGS".into(),
            r#"{"apiTokenId":"m@pve!m","apiTokenSecret":"ms"}"#.into(),
        );
        let cfg = discover(None, &env).unwrap().unwrap();
        assert_eq!(cfg.url.as_deref(), Some("https://env-host:8006"));
        assert!(cfg.url_origin.contains("PROXMOX_HOST"));
        assert_eq!(cfg.token_id.as_deref(), Some("m@pve!m"));
        assert_eq!(cfg.token_secret.as_deref(), Some("ms"));
        assert!(cfg.token_origin.contains("MCP_SETTINGS"));
    }

    #[test]
    fn bad_json_names_the_file() {
        let mut env = FixedMachine {
            cwd: Some(PathBuf::from("/w")),
            ..FixedMachine::default()
        };
        env.files
            .insert(PathBuf::from("/w/proxmox-config.json"), b"{nope".to_vec());
        let err = discover(None, &env).unwrap_err().to_string();
        assert!(err.contains("/w/proxmox-config.json"), "{err}");
    }

    #[test]
    fn admin_path_without_config_is_an_error() {
        let env = FixedMachine::default();
        let err = discover(Some(Path::new("/x/dist/index.js")), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PROXMOX_ADMIN_PATH"), "{err}");
    }
}
