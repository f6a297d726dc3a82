//! The gateway's settings: where it listens, what it tells guests, the
//! host-wide ceiling and presets, the private ranges a host lets through,
//! and the host-held secrets. Parsed by clap like every setting
//! ([`EgressArgs`]), resolved against the [`Machine`] into
//! [`EgressSettings`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use delegate_proto::network::Pattern;
use ipnet::IpNet;

use super::conn_settings::{EgressConnArgs, EgressConns};
use super::resolver::{Resolve, SystemResolver};
use super::secrets::HostSecrets;
use crate::resolve::{Machine, SettingsError, absolute, invalid};

/// Presets every host has; `DELEGATE_EGRESS_PRESETS` adds to or replaces them.
const BUILTIN_PRESETS: &[(&str, &[&str])] = &[
    ("python", &["pypi.org:443", "files.pythonhosted.org:443"]),
    (
        "node",
        &["registry.npmjs.org:443", "registry.yarnpkg.com:443"],
    ),
    (
        "git",
        &[
            "github.com:443",
            "*.githubusercontent.com:443",
            "gitlab.com:443",
            "bitbucket.org:443",
        ],
    ),
    ("anthropic", &["api.anthropic.com:443"]),
];

/// The gateway's settings as given (flags and variables alike).
#[derive(Debug, Clone, clap::Args)]
pub struct EgressArgs {
    /// Address the egress gateway listens on (e.g. 0.0.0.0:8766); unset:
    /// no gateway, and manifests with `network` or `secretEnv` are refused.
    #[arg(long, env = "DELEGATE_EGRESS_LISTEN")]
    pub egress_listen: Option<String>,
    /// A Unix socket the gateway also listens on (for sandboxes without a
    /// network, which get it bound in).
    #[arg(long, env = "DELEGATE_EGRESS_SOCKET")]
    pub egress_socket: Option<PathBuf>,
    /// URL guests use to reach the gateway. Default: the callback URL's
    /// host with the gateway's port.
    #[arg(long, env = "DELEGATE_EGRESS_URL")]
    pub egress_url: Option<String>,
    /// Host-wide ceiling: destinations any job may reach at most
    /// (comma-separated patterns; `*` for any).
    #[arg(
        long,
        env = "DELEGATE_EGRESS_ALLOW",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub egress_allow: Vec<String>,
    /// Presets manifests name as `@name`: `name=pattern|pattern;name=...`,
    /// on top of the built-in python, node, git and anthropic.
    #[arg(long, env = "DELEGATE_EGRESS_PRESETS")]
    pub egress_presets: Option<String>,
    /// Address ranges the gateway may connect to although private,
    /// loopback or link-local (comma-separated CIDRs, e.g. 10.1.0.0/16).
    #[arg(long, env = "DELEGATE_EGRESS_ALLOW_PRIVATE", value_delimiter = ',')]
    pub egress_allow_private: Vec<String>,
    /// A file of `name = value` lines: secrets manifests name in
    /// `secretEnv`, and `anthropic` (an API key) or `claude-oauth` (an
    /// OAuth token) for the gateway to inject. Readable by this user only.
    /// `DELEGATE_SECRET_<NAME>` variables add to it.
    #[arg(long, env = "DELEGATE_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Where the gateway sends a `claude` job's API calls, with the host's
    /// credential added.
    #[arg(
        long,
        env = "DELEGATE_ANTHROPIC_UPSTREAM",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_upstream: String,
    /// Credentials the gateway adds to requests of jobs that may reach a
    /// host, reading them with its own CA: `secret@host=Header`, separated
    /// by `;` (e.g. `github@api.github.com=Authorization`). The header's
    /// value is the secret's, verbatim (`Bearer ghp_...`).
    #[arg(long, env = "DELEGATE_EGRESS_INJECT")]
    pub egress_inject: Option<String>,
    /// A PEM file of CA certificates the gateway trusts, beside the public
    /// roots, for the TLS connections it makes itself (injection hosts and
    /// the Anthropic API): a private registry's CA, or a test's.
    #[arg(long, env = "DELEGATE_EGRESS_UPSTREAM_CA")]
    pub egress_upstream_ca: Option<PathBuf>,
    /// The gateway's connection timeouts and caps.
    #[command(flatten)]
    pub conns: EgressConnArgs,
}

/// A credential the gateway adds for one host (`DELEGATE_EGRESS_INJECT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The host secret's name.
    pub secret: String,
    /// The host, lowercase.
    pub host: String,
    /// The header it goes in.
    pub header: hyper::header::HeaderName,
}

/// An upstream base URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `https` or `http`.
    pub tls: bool,
    /// Host name (or IP literal).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Resolved gateway settings.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// Where the gateway listens; `None`: no gateway.
    pub listen: Option<SocketAddr>,
    /// The Unix socket it also listens on.
    pub socket: Option<PathBuf>,
    /// What guests are told, when set; else derived once the port is known.
    pub url: Option<String>,
    /// The ceiling no manifest exceeds.
    pub ceiling: Vec<Pattern>,
    /// Presets by lowercase name.
    pub presets: BTreeMap<String, Vec<Pattern>>,
    /// Ranges allowed although private.
    pub allow_private: Vec<IpNet>,
    /// Host names always refused unless in `allow_private` by address
    /// (the Proxmox API's host, filled in by the engine).
    pub always_denied_hosts: Vec<String>,
    /// Host-held secrets.
    pub secrets: HostSecrets,
    /// The Anthropic API the gateway forwards to.
    pub anthropic_upstream: Upstream,
    /// How the gateway resolves names (tests map names to loopback).
    pub resolver: Arc<dyn Resolve>,
    /// Credentials added per host, with TLS terminated by `ca`.
    pub injections: Vec<Injection>,
    /// CA certificates trusted beside the public roots upstream.
    pub upstream_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The gateway's CA, made at start when there are injections.
    pub ca: Option<Arc<super::ca::InjectCa>>,
    /// Connection timeouts and caps.
    pub conns: EgressConns,
}

impl EgressArgs {
    /// Checks every value, naming the setting in each error.
    pub fn resolve(&self, machine: &dyn Machine) -> Result<EgressSettings, SettingsError> {
        let listen = match self.egress_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "DELEGATE_EGRESS_LISTEN",
                    format!("{text:?} is not an address like 0.0.0.0:8766"),
                )
            })?),
        };
        let socket = match &self.egress_socket {
            Some(p) => Some(absolute("DELEGATE_EGRESS_SOCKET", p, machine)?),
            None => None,
        };
        if socket.is_some() && listen.is_none() {
            return Err(invalid(
                "DELEGATE_EGRESS_SOCKET",
                "needs DELEGATE_EGRESS_LISTEN as well (guests on a network use the TCP address)",
            ));
        }
        let url = match self.egress_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => {
                let base = u.trim_end_matches('/');
                if !base.starts_with("http://") || base.len() <= "http://".len() {
                    return Err(invalid(
                        "DELEGATE_EGRESS_URL",
                        format!("{u:?} must be an http:// URL such as http://10.0.2.2:8766"),
                    ));
                }
                Some(base.to_string())
            }
        };
        let ceiling = patterns("DELEGATE_EGRESS_ALLOW", &self.egress_allow)?;
        let mut presets: BTreeMap<String, Vec<Pattern>> = BUILTIN_PRESETS
            .iter()
            .map(|(name, list)| {
                let parsed = list.iter().filter_map(|p| Pattern::parse(p).ok()).collect();
                (name.to_string(), parsed)
            })
            .collect();
        if let Some(text) = &self.egress_presets {
            for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, list) = item.split_once('=').ok_or_else(|| {
                    invalid(
                        "DELEGATE_EGRESS_PRESETS",
                        format!("{item:?} is not name=pattern|pattern"),
                    )
                })?;
                let list: Vec<String> = list.split('|').map(str::to_string).collect();
                let parsed = patterns("DELEGATE_EGRESS_PRESETS", &list)?;
                presets.insert(name.trim().to_ascii_lowercase(), parsed);
            }
        }
        let allow_private = self
            .egress_allow_private
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "DELEGATE_EGRESS_ALLOW_PRIVATE",
                            format!("{s:?} is not an address or a CIDR range"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let secrets = HostSecrets::resolve(self.secrets_file.as_deref(), machine)?;
        let injections = match &self.egress_inject {
            Some(text) => injections(text, &secrets)?,
            None => Vec::new(),
        };
        let upstream_roots = match &self.egress_upstream_ca {
            Some(p) => roots(&absolute("DELEGATE_EGRESS_UPSTREAM_CA", p, machine)?)?,
            None => Vec::new(),
        };
        Ok(EgressSettings {
            listen,
            socket,
            url,
            ceiling,
            presets,
            allow_private,
            always_denied_hosts: Vec::new(),
            secrets,
            anthropic_upstream: upstream(&self.anthropic_upstream)?,
            resolver: Arc::new(SystemResolver),
            injections,
            upstream_roots,
            ca: None,
            conns: self.conns.resolve()?,
        })
    }
}

/// `secret@host=Header;...`, each secret held by the host.
fn injections(text: &str, secrets: &HostSecrets) -> Result<Vec<Injection>, SettingsError> {
    const SETTING: &str = "DELEGATE_EGRESS_INJECT";
    let mut out: Vec<Injection> = Vec::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || invalid(SETTING, format!("{item:?} is not secret@host=Header"));
        let (secret, rest) = item.split_once('@').ok_or_else(bad)?;
        let (host, header) = rest.split_once('=').ok_or_else(bad)?;
        let host = host.trim().to_ascii_lowercase();
        match Pattern::parse(&host) {
            Ok(Pattern::Host {
                wildcard: false,
                port: None,
                ..
            }) => {}
            _ => {
                return Err(invalid(
                    SETTING,
                    format!("{host:?}: a host name without port or wildcard"),
                ));
            }
        }
        let header = hyper::header::HeaderName::from_bytes(header.trim().as_bytes())
            .map_err(|_| invalid(SETTING, format!("{header:?} is not a header name")))?;
        let secret = secret.trim().to_string();
        if secrets.get(&secret).is_none() {
            return Err(invalid(
                SETTING,
                format!(
                    "the host holds no secret {secret:?} (DELEGATE_SECRET_* or the secrets file)"
                ),
            ));
        }
        if out.iter().any(|i| i.host == host) {
            return Err(invalid(SETTING, format!("{host:?} is named twice")));
        }
        out.push(Injection {
            secret,
            host,
            header,
        });
    }
    Ok(out)
}

/// The certificates of a PEM file.
fn roots(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SettingsError> {
    use rustls::pki_types::pem::PemObject;
    const SETTING: &str = "DELEGATE_EGRESS_UPSTREAM_CA";
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(SETTING, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            SETTING,
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn patterns(setting: &'static str, list: &[String]) -> Result<Vec<Pattern>, SettingsError> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| match Pattern::parse(s) {
            Ok(Pattern::Preset(_)) => Err(invalid(setting, format!("{s:?}: presets cannot nest"))),
            Ok(p) => Ok(p),
            Err(rule) => Err(invalid(setting, rule)),
        })
        .collect()
}

fn upstream(text: &str) -> Result<Upstream, SettingsError> {
    let bad = || {
        invalid(
            "DELEGATE_ANTHROPIC_UPSTREAM",
            format!("{text:?} must be a base URL like https://api.anthropic.com"),
        )
    };
    let text = text.trim().trim_end_matches('/');
    let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, p.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (rest, default_port),
    };
    Ok(Upstream {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    })
}

/// The host part of `scheme://host:port/...`, lowercased, brackets off.
pub fn host_of_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => h,
        _ => authority,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// A pattern as a person writes it.
fn show(p: &Pattern) -> String {
    let port = |p: &Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
    match p {
        Pattern::Any { port: p } => format!("*{}", port(p)),
        Pattern::Host {
            name,
            wildcard,
            port: p,
        } => {
            let star = if *wildcard { "*." } else { "" };
            format!("{star}{name}{}", port(p))
        }
        Pattern::Preset(name) => format!("@{name}"),
    }
}

impl EgressSettings {
    /// The settings as `(variable, value)` pairs for `delegate-host
    /// config`: secrets by name only.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let none = || "(none)".to_string();
        let list = |ps: &[Pattern]| ps.iter().map(show).collect::<Vec<_>>().join(",");
        let up = &self.anthropic_upstream;
        let mut out = vec![
            (
                "DELEGATE_EGRESS_LISTEN",
                self.listen.map_or_else(none, |a| a.to_string()),
            ),
            (
                "DELEGATE_EGRESS_SOCKET",
                self.socket
                    .as_ref()
                    .map_or_else(none, |p| p.display().to_string()),
            ),
            ("DELEGATE_EGRESS_URL", self.url.clone().unwrap_or_else(none)),
            ("DELEGATE_EGRESS_ALLOW", list(&self.ceiling)),
            (
                "DELEGATE_EGRESS_PRESETS",
                self.presets
                    .iter()
                    .map(|(name, ps)| format!("{name}={}", list(ps).replace(',', "|")))
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            (
                "DELEGATE_EGRESS_ALLOW_PRIVATE",
                self.allow_private
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "DELEGATE_SECRET_* (names)",
                self.secrets.names().collect::<Vec<_>>().join(","),
            ),
            (
                "DELEGATE_EGRESS_INJECT",
                self.injections
                    .iter()
                    .map(|i| format!("{}@{}={}", i.secret, i.host, i.header))
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            (
                "DELEGATE_EGRESS_UPSTREAM_CA (certificates)",
                self.upstream_roots.len().to_string(),
            ),
            (
                "DELEGATE_ANTHROPIC_UPSTREAM",
                format!(
                    "{}://{}:{}",
                    if up.tls { "https" } else { "http" },
                    up.host,
                    up.port
                ),
            ),
        ];
        out.extend(self.conns.describe());
        out
    }

    /// The URL guests are told once the gateway is bound at `bound`: the
    /// setting, or the callback URL's host with the bound port.
    pub fn url_for(&self, callback_url: &str, bound: SocketAddr) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let host = host_of_url(callback_url);
        if host.contains(':') {
            format!("http://[{host}]:{}", bound.port())
        } else {
            format!("http://{host}:{}", bound.port())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::FixedMachine;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        egress: EgressArgs,
    }

    fn resolve(args: &[&str]) -> Result<EgressSettings, SettingsError> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let m = FixedMachine {
            cwd: Some("/srv".into()),
            ..FixedMachine::default()
        };
        cli.egress.resolve(&m)
    }

    #[test]
    fn defaults_run_no_gateway_and_allow_any_destination_by_ceiling() {
        let s = resolve(&[]).unwrap();
        assert!(s.listen.is_none() && s.allow_private.is_empty());
        assert_eq!(s.ceiling, vec![Pattern::Any { port: None }]);
        assert!(s.presets.contains_key("python"));
        assert_eq!(s.anthropic_upstream.host, "api.anthropic.com");
        assert_eq!(s.anthropic_upstream.port, 443);
    }

    #[test]
    fn each_bad_value_names_its_setting() {
        for (args, setting) in [
            (&["--egress-listen", "nope"][..], "DELEGATE_EGRESS_LISTEN"),
            (&["--egress-allow", "a b"][..], "DELEGATE_EGRESS_ALLOW"),
            (&["--egress-allow", "@python"][..], "DELEGATE_EGRESS_ALLOW"),
            (&["--egress-presets", "x"][..], "DELEGATE_EGRESS_PRESETS"),
            (
                &["--egress-allow-private", "10.0.0.0/99"][..],
                "DELEGATE_EGRESS_ALLOW_PRIVATE",
            ),
            (&["--egress-url", "ftp://x"][..], "DELEGATE_EGRESS_URL"),
            (
                &["--egress-socket", "/run/gw.sock"][..],
                "DELEGATE_EGRESS_SOCKET",
            ),
            (
                &["--anthropic-upstream", "api.anthropic.com"][..],
                "DELEGATE_ANTHROPIC_UPSTREAM",
            ),
        ] {
            let err = resolve(args).unwrap_err().to_string();
            assert!(err.starts_with(setting), "{args:?}: {err}");
        }
    }

    #[test]
    fn presets_add_and_the_url_follows_the_callback_host() {
        let s = resolve(&[
            "--egress-listen",
            "0.0.0.0:0",
            "--egress-presets",
            "corp=git.corp.example:443|*.corp.example",
            "--egress-allow-private",
            "127.0.0.0/8,10.0.0.1",
        ])
        .unwrap();
        assert_eq!(s.presets["corp"].len(), 2);
        assert_eq!(s.allow_private.len(), 2);
        let bound: SocketAddr = "0.0.0.0:8766".parse().unwrap();
        assert_eq!(
            s.url_for("http://10.0.2.2:8765", bound),
            "http://10.0.2.2:8766"
        );
    }

    #[test]
    fn injections_name_a_held_secret_a_plain_host_and_a_header() {
        let with_secret = |inject: &str| {
            let cli = Cli::try_parse_from(["x", "--egress-inject", inject]).unwrap();
            let m = FixedMachine {
                cwd: Some("/srv".into()),
                ..FixedMachine::default()
            }
            .with_var("DELEGATE_SECRET_GITHUB", "Bearer ghp_x");
            cli.egress.resolve(&m)
        };
        let s = with_secret("github@API.github.com=Authorization; ").unwrap();
        assert_eq!(s.injections.len(), 1);
        assert_eq!(s.injections[0].host, "api.github.com");
        assert_eq!(s.injections[0].header, hyper::header::AUTHORIZATION);
        for bad in [
            "github",
            "nope@api.github.com=Authorization",
            "github@*.github.com=Authorization",
            "github@api.github.com:443=Authorization",
            "github@api.github.com=Bad Header",
            "github@a.example=X-A;github@a.example=X-B",
        ] {
            let err = with_secret(bad).unwrap_err().to_string();
            assert!(err.starts_with("DELEGATE_EGRESS_INJECT"), "{bad}: {err}");
        }
    }
}
