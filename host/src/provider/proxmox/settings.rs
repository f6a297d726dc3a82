//! Proxmox settings: [`ProxmoxArgs`] (flags and environment, parsed only)
//! resolved into [`ProxmoxSettings`] (validated, with the origin of every
//! credential recorded so start-up can say where it came from).
//!
//! Users of the original delegation server configured Proxmox through
//! mcp-proxmox-admin; when our own `PROXMOX_URL`/token are absent, the host
//! and token are taken from that server's configuration (see [`super::migrate`]).

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::firewall::{FirewallMode, FirewallSettings};
use super::migrate::{self, AdminConfig};
use crate::resolve::{Machine, Secret, SettingsError, invalid, parse_flag};

/// How to clone the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CloneMode {
    /// Linked clone when the source is a template on storage that supports it,
    /// full clone otherwise.
    #[default]
    Auto,
    /// Always a linked clone; fail when it is impossible.
    Linked,
    /// Always a full clone.
    Full,
}

impl CloneMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneMode::Auto => "auto",
            CloneMode::Linked => "linked",
            CloneMode::Full => "full",
        }
    }
}

/// Proxmox settings as given on the command line or in the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxmoxArgs {
    /// Proxmox VE API base URL, e.g. `https://pve.example:8006`.
    #[arg(long = "proxmox-url", env = "PROXMOX_URL")]
    pub url: Option<String>,
    /// API token id, `USER@REALM!TOKENNAME`.
    #[arg(long = "proxmox-token-id", env = "PROXMOX_TOKEN_ID")]
    pub token_id: Option<String>,
    /// API token secret (a UUID).
    #[arg(
        long = "proxmox-token-secret",
        env = "PROXMOX_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,
    /// File holding the API token secret.
    #[arg(long = "proxmox-token-secret-file", env = "PROXMOX_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// User for ticket authentication, `USER@REALM` (instead of a token).
    #[arg(long = "proxmox-user", env = "PROXMOX_USER")]
    pub user: Option<String>,
    /// Password for ticket authentication.
    #[arg(
        long = "proxmox-password",
        env = "PROXMOX_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// PEM file with the CA that signed the API's certificate.
    #[arg(long = "proxmox-ca-file", env = "PROXMOX_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Pinned SHA-256 fingerprints of the API certificate (colon-separated
    /// hex; several comma-separated).
    #[arg(long = "proxmox-fingerprint", env = "PROXMOX_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Skip TLS verification (explicit opt-in; logged at every start).
    #[arg(
        long = "proxmox-insecure",
        env = "PROXMOX_INSECURE",
        value_parser = parse_flag,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_value = "0",
        default_missing_value = "1"
    )]
    pub insecure: bool,
    /// Nodes that may run jobs (comma-separated; default all online).
    #[arg(long = "proxmox-nodes", env = "PROXMOX_NODES")]
    pub nodes: Option<String>,
    /// Pool the VMs are added to.
    #[arg(long = "proxmox-pool", env = "PROXMOX_POOL")]
    pub pool: Option<String>,
    /// Target storage for full clones.
    #[arg(long = "proxmox-storage", env = "PROXMOX_STORAGE")]
    pub storage: Option<String>,
    /// Bridge the template's NIC must use (checked by `doctor`).
    #[arg(long = "proxmox-bridge", env = "PROXMOX_BRIDGE")]
    pub bridge: Option<String>,
    /// VMIDs this host may allocate, `FIRST-LAST`.
    #[arg(
        long = "proxmox-vmid-range",
        env = "PROXMOX_VMID_RANGE",
        default_value = "90000-90999"
    )]
    pub vmid_range: String,
    /// Clone strategy.
    #[arg(long = "proxmox-clone", env = "PROXMOX_CLONE", value_enum, default_value_t = CloneMode::Auto)]
    pub clone: CloneMode,
    /// Path of mcp-proxmox-admin (`.../dist/index.js`); its configuration
    /// supplies the host and token when ours are not set.
    #[arg(long = "proxmox-admin-path", env = "PROXMOX_ADMIN_PATH")]
    pub admin_path: Option<PathBuf>,
    /// How long to wait for a started VM's guest agent, in seconds.
    #[arg(
        long = "proxmox-agent-wait-seconds",
        env = "PROXMOX_AGENT_WAIT_SECONDS",
        default_value_t = 600
    )]
    pub agent_wait_seconds: u64,
    /// Most clones running at once on one node.
    #[arg(
        long = "proxmox-max-clones-per-node",
        env = "PROXMOX_MAX_CLONES_PER_NODE",
        default_value_t = 2
    )]
    pub max_clones_per_node: usize,
    /// Most clones running at once onto one storage.
    #[arg(
        long = "proxmox-max-clones-per-storage",
        env = "PROXMOX_MAX_CLONES_PER_STORAGE",
        default_value_t = 4
    )]
    pub max_clones_per_storage: usize,
    /// A VM of ours still locked `clone` after this many seconds is reported.
    #[arg(
        long = "proxmox-clone-lock-grace-seconds",
        env = "PROXMOX_CLONE_LOCK_GRACE_SECONDS",
        default_value_t = 900
    )]
    pub clone_lock_grace_seconds: u64,
    /// Name of this host instance in VM tags (`delegate-<instance>`);
    /// default: the machine's host name.
    #[arg(long = "proxmox-instance", env = "PROXMOX_INSTANCE")]
    pub instance: Option<String>,
    /// The per-VM egress firewall: `auto` (when the token has
    /// VM.Config.Network, else a warning), `required` (fail without it) or
    /// `off` (the network layout confines VMs).
    #[arg(
        long = "proxmox-firewall",
        env = "DELEGATE_PROXMOX_FIREWALL",
        value_enum,
        default_value_t = FirewallMode::Auto
    )]
    pub firewall: FirewallMode,
}

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: PVEAPIToken=USER@REALM!NAME=SECRET`.
    Token {
        /// `USER@REALM!NAME`.
        id: String,
        /// The secret.
        secret: Secret,
    },
    /// A ticket from `POST /access/ticket`, renewed before it expires.
    Ticket {
        /// `USER@REALM`.
        user: String,
        /// The password.
        password: Secret,
    },
}

impl Credentials {
    /// The user or token id, for messages.
    pub fn principal(&self) -> &str {
        match self {
            Credentials::Token { id, .. } => id,
            Credentials::Ticket { user, .. } => user,
        }
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM bytes of a CA to trust (instead of the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Where `ca_pem` came from.
    pub ca_file: Option<PathBuf>,
    /// Accepted SHA-256 fingerprints of the server's leaf certificate.
    pub fingerprints: Vec<[u8; 32]>,
    /// Accept any certificate.
    pub insecure: bool,
}

/// Validated Proxmox settings.
#[derive(Debug, Clone)]
pub struct ProxmoxSettings {
    /// API base, `https://host:port` without a trailing slash.
    pub url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// Certificate checks.
    pub tls: TlsSettings,
    /// Nodes allowed to run jobs; `None` means every online node.
    pub nodes: Option<Vec<String>>,
    /// Pool for new VMs.
    pub pool: Option<String>,
    /// Target storage for full clones.
    pub storage: Option<String>,
    /// Bridge the VMs use (for `doctor`).
    pub bridge: Option<String>,
    /// VMIDs we may allocate.
    pub vmid_range: RangeInclusive<u32>,
    /// Clone strategy.
    pub clone: CloneMode,
    /// Budget for the guest agent to answer after start.
    pub agent_wait: Duration,
    /// Concurrent clones per node.
    pub max_clones_per_node: usize,
    /// Concurrent clones per target storage.
    pub max_clones_per_storage: usize,
    /// How long `lock: clone` may last before it is reported.
    pub clone_lock_grace: Duration,
    /// This host's instance name as it appears in tags (lower-case).
    pub instance: String,
    /// The per-VM egress firewall (the URLs are filled in by the host's
    /// settings, which know the callback and gateway).
    pub firewall: FirewallSettings,
    /// Where the URL and credentials came from, one sentence each, for the
    /// start-up log.
    pub origins: Vec<String>,
}

impl ProxmoxArgs {
    /// Validates against the machine (secret and CA files, the host name,
    /// mcp-proxmox-admin's configuration); every error names the setting.
    pub fn resolve(&self, env: &dyn Machine) -> Result<ProxmoxSettings, SettingsError> {
        let mut origins = Vec::new();
        let admin = if self.url.is_none() || !self.has_own_credentials() {
            migrate::discover(self.admin_path.as_deref(), env)?
        } else {
            None
        };

        let url = match (&self.url, &admin) {
            (Some(url), _) => {
                origins.push("PROXMOX_URL from flags/environment".to_string());
                check_url(url)?
            }
            (None, Some(AdminConfig { url: Some(url), .. })) => {
                origins.push(format!(
                    "PROXMOX_URL {url} taken from mcp-proxmox-admin ({})",
                    admin.as_ref().map_or("", |a| a.url_origin.as_str())
                ));
                check_url(url)?
            }
            (None, _) => {
                return Err(invalid(
                    "PROXMOX_URL",
                    "required with DELEGATE_PROVIDER=proxmox (e.g. https://pve.example:8006); \
                     no mcp-proxmox-admin configuration was found either",
                ));
            }
        };

        let credentials = self.credentials(env, admin.as_ref(), &mut origins)?;
        let tls = self.tls(env, admin.as_ref(), &mut origins)?;

        let nodes = match self.nodes.as_deref().map(split_list) {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => {
                for n in &list {
                    if !is_node_name(n) {
                        return Err(invalid(
                            "PROXMOX_NODES",
                            format!("{n:?} is not a node name (letters, digits, '-', '.')"),
                        ));
                    }
                }
                Some(list)
            }
        };
        let pool = optional_id("PROXMOX_POOL", self.pool.as_deref(), is_pool_id)?;
        let storage = optional_id("PROXMOX_STORAGE", self.storage.as_deref(), is_storage_id)?;
        let bridge = optional_id("PROXMOX_BRIDGE", self.bridge.as_deref(), is_storage_id)?;
        let vmid_range = parse_vmid_range(&self.vmid_range)?;

        if self.agent_wait_seconds == 0 || self.agent_wait_seconds > 24 * 3600 {
            return Err(invalid(
                "PROXMOX_AGENT_WAIT_SECONDS",
                "must be between 1 and 86400",
            ));
        }
        if self.max_clones_per_node == 0 {
            return Err(invalid("PROXMOX_MAX_CLONES_PER_NODE", "must be at least 1"));
        }
        if self.max_clones_per_storage == 0 {
            return Err(invalid(
                "PROXMOX_MAX_CLONES_PER_STORAGE",
                "must be at least 1",
            ));
        }
        if self.clone_lock_grace_seconds == 0 {
            return Err(invalid(
                "PROXMOX_CLONE_LOCK_GRACE_SECONDS",
                "must be at least 1",
            ));
        }
        let instance = match &self.instance {
            Some(name) => {
                let tag = tag_safe(name);
                if tag.is_empty() {
                    return Err(invalid(
                        "PROXMOX_INSTANCE",
                        "must contain letters or digits",
                    ));
                }
                tag
            }
            None => {
                let tag = tag_safe(&env.hostname().unwrap_or_default());
                if tag.is_empty() {
                    "host".to_string()
                } else {
                    tag
                }
            }
        };

        Ok(ProxmoxSettings {
            url,
            credentials,
            tls,
            nodes,
            pool,
            storage,
            bridge,
            vmid_range,
            clone: self.clone,
            agent_wait: Duration::from_secs(self.agent_wait_seconds),
            max_clones_per_node: self.max_clones_per_node,
            max_clones_per_storage: self.max_clones_per_storage,
            clone_lock_grace: Duration::from_secs(self.clone_lock_grace_seconds),
            instance,
            firewall: FirewallSettings {
                mode: self.firewall,
                ..FirewallSettings::default()
            },
            origins,
        })
    }

    fn has_own_credentials(&self) -> bool {
        self.token_id.is_some() || self.user.is_some()
    }

    fn credentials(
        &self,
        env: &dyn Machine,
        admin: Option<&AdminConfig>,
        origins: &mut Vec<String>,
    ) -> Result<Credentials, SettingsError> {
        if self.token_id.is_some() && self.user.is_some() {
            return Err(invalid(
                "PROXMOX_TOKEN_ID",
                "set either an API token (PROXMOX_TOKEN_ID) or a user (PROXMOX_USER), not both",
            ));
        }
        if let Some(id) = &self.token_id {
            check_token_id("PROXMOX_TOKEN_ID", id)?;
            let secret = match (&self.token_secret, &self.token_secret_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "PROXMOX_TOKEN_SECRET",
                        "set PROXMOX_TOKEN_SECRET or PROXMOX_TOKEN_SECRET_FILE, not both",
                    ));
                }
                (Some(s), None) => s.trim().to_string(),
                (None, Some(path)) => {
                    let bytes = env.read(path).map_err(|source| SettingsError::Read {
                        setting: "PROXMOX_TOKEN_SECRET_FILE",
                        path: path.clone(),
                        source,
                    })?;
                    String::from_utf8_lossy(&bytes).trim().to_string()
                }
                (None, None) => {
                    return Err(invalid(
                        "PROXMOX_TOKEN_SECRET",
                        "PROXMOX_TOKEN_ID is set but neither PROXMOX_TOKEN_SECRET nor \
                         PROXMOX_TOKEN_SECRET_FILE is",
                    ));
                }
            };
            check_secret("PROXMOX_TOKEN_SECRET", &secret)?;
            origins.push(format!("API token {id} from flags/environment"));
            return Ok(Credentials::Token {
                id: id.clone(),
                secret: Secret::new(secret),
            });
        }
        if let Some(user) = &self.user {
            check_user_id("PROXMOX_USER", user)?;
            let Some(password) = self.password.clone().filter(|p| !p.is_empty()) else {
                return Err(invalid(
                    "PROXMOX_PASSWORD",
                    "PROXMOX_USER is set but PROXMOX_PASSWORD is not",
                ));
            };
            origins.push(format!("ticket login as {user} from flags/environment"));
            return Ok(Credentials::Ticket {
                user: user.clone(),
                password: Secret::new(password),
            });
        }
        if self.token_secret.is_some() || self.token_secret_file.is_some() {
            return Err(invalid(
                "PROXMOX_TOKEN_ID",
                "a token secret is set but PROXMOX_TOKEN_ID is not",
            ));
        }
        if let Some(a) = admin
            && let (Some(id), Some(secret)) = (&a.token_id, &a.token_secret)
        {
            check_token_id("PROXMOX_TOKEN_ID", id).map_err(|e| SettingsError::Migration {
                origin: a.token_origin.clone(),
                message: e.to_string(),
            })?;
            check_secret("PROXMOX_TOKEN_SECRET", secret).map_err(|e| SettingsError::Migration {
                origin: a.token_origin.clone(),
                message: e.to_string(),
            })?;
            origins.push(format!(
                "API token {id} taken from mcp-proxmox-admin ({})",
                a.token_origin
            ));
            return Ok(Credentials::Token {
                id: id.clone(),
                secret: Secret::new(secret.clone()),
            });
        }
        Err(invalid(
            "PROXMOX_TOKEN_ID",
            "no credentials: set PROXMOX_TOKEN_ID with PROXMOX_TOKEN_SECRET (or \
             PROXMOX_TOKEN_SECRET_FILE), or PROXMOX_USER with PROXMOX_PASSWORD",
        ))
    }

    fn tls(
        &self,
        env: &dyn Machine,
        admin: Option<&AdminConfig>,
        origins: &mut Vec<String>,
    ) -> Result<TlsSettings, SettingsError> {
        let mut tls = TlsSettings {
            insecure: self.insecure,
            ..TlsSettings::default()
        };
        if let Some(path) = &self.ca_file {
            let pem = env.read(path).map_err(|source| SettingsError::Read {
                setting: "PROXMOX_CA_FILE",
                path: path.clone(),
                source,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "PROXMOX_CA_FILE",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            tls.ca_pem = Some(pem);
            tls.ca_file = Some(path.clone());
        }
        if let Some(list) = &self.fingerprint {
            for item in split_list(list) {
                tls.fingerprints
                    .push(parse_fingerprint(&item).ok_or_else(|| {
                    invalid(
                        "PROXMOX_FINGERPRINT",
                        format!(
                            "{item:?} is not a SHA-256 fingerprint (32 bytes as colon-separated \
                             hex, e.g. AB:CD:...)"
                        ),
                    )
                })?);
            }
        }
        if tls.insecure && (tls.ca_pem.is_some() || !tls.fingerprints.is_empty()) {
            return Err(invalid(
                "PROXMOX_INSECURE",
                "cannot be combined with PROXMOX_CA_FILE or PROXMOX_FINGERPRINT; drop one",
            ));
        }
        // mcp-proxmox-admin's `verifySsl: false` is carried over only as a
        // notice: skipping verification stays an explicit opt-in here.
        if let Some(a) = admin
            && a.verify_ssl == Some(false)
            && !tls.insecure
            && tls.ca_pem.is_none()
            && tls.fingerprints.is_empty()
        {
            origins.push(format!(
                "mcp-proxmox-admin had verifySsl=false ({}); TLS is still verified here: set \
                 PROXMOX_FINGERPRINT (see `delegate-host doctor`) or PROXMOX_INSECURE=1",
                a.url_origin
            ));
        }
        Ok(tls)
    }
}

mod describe;
mod validate;

use validate::{
    check_secret, check_token_id, check_url, check_user_id, is_node_name, is_pool_id,
    is_storage_id, optional_id, parse_vmid_range, split_list,
};
pub use validate::{format_fingerprint, is_token_id, is_user_id, parse_fingerprint, tag_safe};

#[cfg(test)]
mod tests;
