//! Whether a job may reach a destination: first by name (the manifest's
//! deny and allow lists with presets expanded, then the host's ceiling),
//! then by address after the gateway resolved the name (private,
//! loopback and link-local ranges, the host's own addresses and the
//! Proxmox API are refused unless `DELEGATE_EGRESS_ALLOW_PRIVATE` covers
//! them). Every refusal says why, for the log and for the agent.

use std::net::IpAddr;

use delegate_proto::network::{NetworkPolicy, Pattern};
use delegate_proto::{JobManifest, ManifestError};

use super::settings::EgressSettings;

/// A job's policy with presets expanded.
#[derive(Debug, Clone)]
pub struct JobPolicy {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl JobPolicy {
    /// Expands `@preset` entries; an unknown preset is an error naming it.
    pub fn expand(settings: &EgressSettings, net: &NetworkPolicy) -> Result<Self, ManifestError> {
        let mut allow = Vec::new();
        for (i, entry) in net.allow.iter().enumerate() {
            let field = || format!("network.allow[{i}]");
            match Pattern::parse(entry).map_err(|rule| ManifestError {
                field: field(),
                rule,
            })? {
                Pattern::Preset(name) => {
                    let list = settings.presets.get(&name).ok_or_else(|| ManifestError {
                        field: field(),
                        rule: format!(
                            "this host has no preset @{name}; it has {}",
                            settings
                                .presets
                                .keys()
                                .map(|k| format!("@{k}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })?;
                    allow.extend(list.iter().cloned());
                }
                p => allow.push(p),
            }
        }
        let deny = net
            .deny
            .iter()
            .filter_map(|d| Pattern::parse(d).ok())
            .collect();
        Ok(JobPolicy { allow, deny })
    }

    /// Whether the names allow `host:port`; the error is why not.
    pub fn check_name(
        &self,
        settings: &EgressSettings,
        host: &str,
        port: u16,
    ) -> Result<(), String> {
        if self.deny.iter().any(|p| p.matches(host, port)) {
            return Err(format!("{host}:{port} is in the job's network.deny"));
        }
        if !self.allow.iter().any(|p| p.matches(host, port)) {
            return Err(format!(
                "{host}:{port} is not in the job's network.allow; add it (or a preset) to the manifest"
            ));
        }
        if !settings.ceiling.iter().any(|p| p.matches(host, port)) {
            return Err(format!(
                "{host}:{port} is outside the host's ceiling (DELEGATE_EGRESS_ALLOW)"
            ));
        }
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        if settings.always_denied_hosts.contains(&h) {
            return Err(format!(
                "{host} is the Proxmox API, never reachable from jobs"
            ));
        }
        Ok(())
    }
}

/// Whether the gateway may connect to `ip`; `own` are the host's own
/// addresses (and the Proxmox API's).
pub fn check_addr(settings: &EgressSettings, ip: IpAddr, own: &[IpAddr]) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if settings.allow_private.iter().any(|net| net.contains(&ip)) {
        return Ok(());
    }
    if own.contains(&ip) {
        return Err(format!("{ip} is this host (or its Proxmox API)"));
    }
    if let Some(kind) = special_range(ip) {
        return Err(format!(
            "{ip} is a {kind} address (allow it with DELEGATE_EGRESS_ALLOW_PRIVATE)"
        ));
    }
    Ok(())
}

fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || a == 0 || v4.is_broadcast() || v4.is_multicast() {
                Some("non-unicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("non-unicast")
            } else {
                None
            }
        }
    }
}

/// What `submit` checks beyond the manifest's own rules: a `network` or
/// `secretEnv` needs a gateway, known presets and known secrets.
pub fn check_manifest(settings: &EgressSettings, m: &JobManifest) -> Result<(), ManifestError> {
    if let Some(net) = &m.network {
        if settings.listen.is_none() {
            return Err(ManifestError {
                field: "network".into(),
                rule: "this host runs no egress gateway (DELEGATE_EGRESS_LISTEN), so jobs get no network"
                    .into(),
            });
        }
        JobPolicy::expand(settings, net)?;
    }
    for (var, name) in &m.secret_env {
        if settings.secrets.get(name).is_none() {
            let known: Vec<&str> = settings.secrets.names().collect();
            return Err(ManifestError {
                field: format!("secretEnv.{var}"),
                rule: format!(
                    "this host holds no secret {name:?}; it holds: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        egress: super::super::settings::EgressArgs,
    }

    fn settings(args: &[&str]) -> EgressSettings {
        let mut argv = vec!["x", "--egress-listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap()
            .egress
            .resolve(&crate::resolve::FixedMachine::default())
            .unwrap()
    }

    fn policy(s: &EgressSettings, allow: &[&str], deny: &[&str]) -> JobPolicy {
        let net = NetworkPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        JobPolicy::expand(s, &net).unwrap()
    }

    #[test]
    fn deny_beats_allow_presets_expand_and_the_ceiling_caps() {
        let s = settings(&["--egress-allow", "*.org,github.com"]);
        let p = policy(&s, &["@python", "*"], &["evil.org"]);
        assert!(p.check_name(&s, "pypi.org", 443).is_ok());
        assert!(
            p.check_name(&s, "evil.org", 443)
                .unwrap_err()
                .contains("deny")
        );
        assert!(
            p.check_name(&s, "example.com", 443)
                .unwrap_err()
                .contains("ceiling")
        );
        let p = policy(&s, &["@python"], &[]);
        assert!(
            p.check_name(&s, "github.com", 443)
                .unwrap_err()
                .contains("network.allow")
        );
        let net = NetworkPolicy {
            allow: vec!["pypi.org".into(), "@nope".into()],
            deny: vec![],
        };
        assert_eq!(
            JobPolicy::expand(&s, &net).unwrap_err().field,
            "network.allow[1]"
        );
    }

    #[test]
    fn private_ranges_are_refused_unless_allowed() {
        let s = settings(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(check_addr(&s, ip.parse().unwrap(), &[]).is_err(), "{ip}");
        }
        assert!(check_addr(&s, "93.184.216.34".parse().unwrap(), &[]).is_ok());
        let own: IpAddr = "93.184.216.34".parse().unwrap();
        assert!(
            check_addr(&s, own, &[own])
                .unwrap_err()
                .contains("this host")
        );
        let s = settings(&["--egress-allow-private", "127.0.0.0/8"]);
        assert!(check_addr(&s, "127.0.0.1".parse().unwrap(), &[]).is_ok());
        assert!(check_addr(&s, "10.0.0.1".parse().unwrap(), &[]).is_err());
    }
}
