//! A job's network: the manifest's `network` policy (which destinations the
//! egress gateway lets the job reach), the destination patterns it is made
//! of, `secretEnv` (host-held secrets by name), and what the host tells the
//! guest about its gateway ([`EgressSpec`]).
//!
//! The matching lives here, with the parsing, so the host's gateway and any
//! client that checks a manifest agree on what `*.pythonhosted.org` means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::ManifestError;

/// Most entries in `network.allow` or `network.deny`.
pub const MAX_NETWORK_ENTRIES: usize = 256;
/// Most entries in `secretEnv`.
pub const MAX_SECRET_ENV: usize = 64;

/// `network`: destinations the job may (and may not) reach through the
/// gateway. No `network` at all means no egress beyond the callback API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Patterns: `host`, `*.domain`, either with `:port`, `*` for any
    /// destination, or `@preset` for a host-defined list (`@python`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Patterns that win over `allow` (no presets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// One allow or deny entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*` or `*:port`: any host.
    Any {
        /// The port, when given.
        port: Option<u16>,
    },
    /// `example.com` (exactly that name) or `*.example.com` (any name
    /// below it, not the name itself), lowercased.
    Host {
        /// The name, without `*.`.
        name: String,
        /// Whether names below `name` match instead of `name` itself.
        wildcard: bool,
        /// The port, when given.
        port: Option<u16>,
    },
    /// `@name`: the host's preset of that name.
    Preset(String),
}

impl Pattern {
    /// Parses one entry; the error is the rule it broke.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix('@') {
            if !is_name(name) {
                return Err(format!(
                    "{text:?}: a preset is @ and a name of letters, digits, '-' and '_'"
                ));
            }
            return Ok(Pattern::Preset(name.to_ascii_lowercase()));
        }
        let (host, port) = split_port(text)?;
        if host == "*" {
            return Ok(Pattern::Any { port });
        }
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if !is_host(name) {
            return Err(format!(
                "{text:?} is not a host name, *.domain, an IP address or *, optionally with :port"
            ));
        }
        Ok(Pattern::Host {
            name: name.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether `host:port` matches (presets never match: expand them first).
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match self {
            Pattern::Any { port: p } => port_ok(p),
            Pattern::Host {
                name,
                wildcard,
                port: p,
            } => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                let name_ok = if *wildcard {
                    host.len() > name.len()
                        && host.ends_with(name.as_str())
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'
                } else {
                    host == *name
                };
                name_ok && port_ok(p)
            }
            Pattern::Preset(_) => false,
        }
    }
}

fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    // `[::1]:443` and `[::1]`: brackets mark an IPv6 literal.
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: unclosed '['"))?;
        return match after {
            "" => Ok((inside, None)),
            p => Ok((inside, Some(port(text, p.strip_prefix(':').unwrap_or(p))?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok((host, Some(port(text, p)?))),
        _ => Ok((text, None)),
    }
}

fn port(text: &str, p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: the port must be 1..=65535"))
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn is_host(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
}

/// Checks `network` and `secretEnv`, naming the field in each rejection.
pub(crate) fn validate(
    network: Option<&NetworkPolicy>,
    secret_env: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> Result<(), ManifestError> {
    if let Some(n) = network {
        for (list, entries) in [("allow", &n.allow), ("deny", &n.deny)] {
            if entries.len() > MAX_NETWORK_ENTRIES {
                return Err(ManifestError::new(
                    format!("network.{list}"),
                    format!("at most {MAX_NETWORK_ENTRIES} entries"),
                ));
            }
            for (i, entry) in entries.iter().enumerate() {
                let field = format!("network.{list}[{i}]");
                let pattern =
                    Pattern::parse(entry).map_err(|rule| ManifestError::new(&field, rule))?;
                if list == "deny" && matches!(pattern, Pattern::Preset(_)) {
                    return Err(ManifestError::new(field, "presets are for allow only"));
                }
            }
        }
    }
    if secret_env.len() > MAX_SECRET_ENV {
        return Err(ManifestError::new(
            "secretEnv",
            format!("at most {MAX_SECRET_ENV} variables"),
        ));
    }
    for (var, name) in secret_env {
        let field = format!("secretEnv.{var}");
        if !crate::validate::is_env_name(var) {
            return Err(ManifestError::new(
                field,
                "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        if env.contains_key(var) {
            return Err(ManifestError::new(field, "is also set in env; set it once"));
        }
        if !is_name(name) {
            return Err(ManifestError::new(
                field,
                "must name a host secret: letters, digits, '-' and '_' (at most 64)",
            ));
        }
    }
    Ok(())
}

/// What the host tells the guest about its egress gateway (in
/// [`crate::api::JobSpec`]); absent when the host runs no gateway.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSpec {
    /// The proxy for `HTTP_PROXY`/`HTTPS_PROXY`, without credentials
    /// (`http://10.0.2.2:8766`); the guest adds the job's id and token as
    /// its user and password. `None` when the job has no network policy:
    /// then no proxy variables are set and nothing leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// For a `claude` job that uses the host's Anthropic credential: the
    /// gateway's Anthropic endpoint for `ANTHROPIC_BASE_URL`. The guest
    /// sets a placeholder key that only this gateway accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_base_url: Option<String>,
    /// `secretEnv` resolved: variable → value, from the host's secrets.
    /// Never stored; the guest redacts these values like `secrets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// The gateway's CA certificate (PEM), for a job with a proxy on a host
    /// that injects credentials for some hosts: the guest adds it to the
    /// job's trust store. Name-constrained to those hosts; public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl EgressSpec {
    /// The placeholder API key a job presents to the gateway's Anthropic
    /// endpoint: its id and token, which the gateway checks and replaces
    /// with the host's credential.
    pub fn placeholder_key(job_id: &str, token: &str) -> String {
        format!("delegate.{job_id}.{token}")
    }

    /// Splits a placeholder key back into job id and token.
    pub fn parse_placeholder(key: &str) -> Option<(&str, &str)> {
        key.strip_prefix("delegate.")?.split_once('.')
    }
}

// Secret values must never reach a log line through `{:?}`.
impl std::fmt::Debug for EgressSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressSpec")
            .field("proxy_url", &self.proxy_url)
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field("secret_env", &self.secret_env.keys().collect::<Vec<_>>())
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_ports_and_wildcards() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("pypi.org").matches("PyPI.org", 443));
        assert!(!p("pypi.org").matches("evil-pypi.org", 443));
        assert!(p("*.pythonhosted.org").matches("files.pythonhosted.org", 443));
        assert!(!p("*.pythonhosted.org").matches("pythonhosted.org", 443));
        assert!(!p("*.pythonhosted.org").matches("xpythonhosted.org", 443));
        assert!(p("github.com:443").matches("github.com", 443));
        assert!(!p("github.com:443").matches("github.com", 22));
        assert!(p("*").matches("anything.example", 1));
        assert!(p("[::1]:8080").matches("::1", 8080));
        assert_eq!(p("@Python"), Pattern::Preset("python".into()));
        assert!(!p("@python").matches("python", 443));
        for bad in ["", "a b", "host:0", "host:x", "-a.com", "@", "@a.b", "[::1"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let none = BTreeMap::new();
        let policy = NetworkPolicy {
            allow: vec!["pypi.org".into(), "bad host".into()],
            deny: vec![],
        };
        let e = validate(Some(&policy), &none, &none).unwrap_err();
        assert_eq!(e.field, "network.allow[1]");
        let policy = NetworkPolicy {
            allow: vec![],
            deny: vec!["@python".into()],
        };
        assert_eq!(
            validate(Some(&policy), &none, &none).unwrap_err().field,
            "network.deny[0]"
        );
        let secret_env = BTreeMap::from([("GITHUB_TOKEN".to_string(), "git hub".to_string())]);
        assert_eq!(
            validate(None, &secret_env, &none).unwrap_err().field,
            "secretEnv.GITHUB_TOKEN"
        );
        let secret_env = BTreeMap::from([("X".to_string(), "github".to_string())]);
        let env = BTreeMap::from([("X".to_string(), "1".to_string())]);
        assert!(validate(None, &secret_env, &env).is_err());
        assert!(validate(None, &secret_env, &none).is_ok());
    }

    #[test]
    fn placeholder_round_trips_and_debug_hides_values() {
        let key = EgressSpec::placeholder_key("job-1", "abc");
        assert_eq!(EgressSpec::parse_placeholder(&key), Some(("job-1", "abc")));
        assert_eq!(EgressSpec::parse_placeholder("sk-ant-x"), None);
        let spec = EgressSpec {
            proxy_url: None,
            anthropic_base_url: None,
            secret_env: BTreeMap::from([("T".into(), "hunter2".into())]),
            ca_pem: None,
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
