//! The host's egress gateway, as the job sees it: the proxy variables when
//! the job has a network policy, `ANTHROPIC_BASE_URL` and a placeholder
//! key when the host injects its Anthropic credential, and the values of
//! `secretEnv`. All of them go into the job's environment as secrets, so
//! the runner redacts them from every output like the manifest's own.

use std::path::{Path, PathBuf};

use delegate_proto::JobManifest;
use delegate_proto::network::EgressSpec;

/// Hosts the job reaches without the proxy: its own machine.
const NO_PROXY_BASE: &str = "localhost,127.0.0.1,::1";
/// The system's CA bundle, where distributions keep it.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How a VM's jobs reach the gateway, prepared once per VM and used by
/// every turn: the gateway's base URL (through the relay in a sandbox) and
/// the trust files for its CA.
#[derive(Debug, Default)]
pub struct Route {
    /// `None`: no policy, or the gateway cannot be reached (said on stderr).
    pub gateway: Option<String>,
    /// `None`: no injection hosts, or the files cannot be written.
    pub trust: Option<TrustFiles>,
}

/// Prepares the [`Route`] for a job with `spec` when the bootstrap offers
/// a gateway at `egress_url`.
pub async fn route(egress_url: Option<&str>, spec: Option<&EgressSpec>) -> Route {
    // Only a job with something to reach gets the gateway offered.
    let gateway = match (egress_url, spec) {
        (Some(url), Some(_)) => match crate::egress_relay::gateway_base(url).await {
            Ok(base) => Some(base),
            Err(e) => {
                // The job runs without the gateway: what it needs fails there,
                // with this line in its log.
                crate::say!("delegate-guest: {e}");
                None
            }
        },
        _ => None,
    };
    let trust = spec.and_then(|e| e.ca_pem.as_deref()).and_then(|pem| {
        let dir = std::env::temp_dir().join("delegate-egress-ca");
        write_trust(pem, &dir)
            .inspect_err(|e| {
                // TLS to the injection hosts then fails, saying why.
                crate::say!(
                    "delegate-guest: cannot write the gateway's CA into {}: {e}",
                    dir.display()
                );
            })
            .ok()
    });
    Route { gateway, trust }
}

/// The job's trust store when the gateway injects credentials: the
/// gateway's CA alone, and the system's bundle with it appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustFiles {
    /// System CAs plus the gateway's.
    pub bundle: PathBuf,
    /// The gateway's CA alone (Node's `NODE_EXTRA_CA_CERTS`).
    pub ca: PathBuf,
}

/// Writes the trust files for `ca_pem` into `dir` (created), readable by
/// the job's user: the CA is public, and it is name-constrained to the
/// hosts where the gateway injects.
pub fn write_trust(ca_pem: &str, dir: &Path) -> std::io::Result<TrustFiles> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let system = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let files = TrustFiles {
        bundle: dir.join("ca-bundle.pem"),
        ca: dir.join("egress-ca.pem"),
    };
    let mut bundle = system;
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    for (path, text) in [(&files.ca, ca_pem), (&files.bundle, bundle.as_str())] {
        std::fs::write(path, text)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(files)
}

/// `manifest` with the gateway's variables added. The proxy carries the
/// job's id and token as its credentials (the job's own: they let it act
/// as this job and nothing more). `gateway` is where this guest reaches
/// the gateway when its provider says so (`http://host:port`, see
/// `egress_relay`); it replaces the host's address in the spec's URLs.
pub fn apply(
    mut manifest: JobManifest,
    spec: Option<&EgressSpec>,
    gateway: Option<&str>,
    trust: Option<&TrustFiles>,
    job_id: &str,
    token: &str,
) -> JobManifest {
    let Some(spec) = spec else {
        return manifest;
    };
    let rebased;
    let spec = match gateway {
        Some(base) => {
            rebased = EgressSpec {
                proxy_url: spec.proxy_url.as_deref().map(|u| rebase(u, base)),
                anthropic_base_url: spec.anthropic_base_url.as_deref().map(|u| rebase(u, base)),
                secret_env: spec.secret_env.clone(),
                ca_pem: spec.ca_pem.clone(),
            };
            &rebased
        }
        None => spec,
    };
    let set = |m: &mut JobManifest, name: &str, value: String, secret: bool| {
        m.env.insert(name.to_string(), value);
        if secret && !m.secrets.iter().any(|s| s == name) {
            m.secrets.push(name.to_string());
        }
    };
    for (var, value) in &spec.secret_env {
        set(&mut manifest, var, value.clone(), true);
    }
    let gateway_host = spec
        .proxy_url
        .as_deref()
        .or(spec.anthropic_base_url.as_deref())
        .and_then(host_of);
    let mut no_proxy = NO_PROXY_BASE.to_string();
    if let Some(h) = &gateway_host {
        // The Anthropic endpoint is the gateway itself, reached directly.
        no_proxy = format!("{no_proxy},{h}");
    }
    if let Some(proxy) = &spec.proxy_url {
        let with_creds = match proxy.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{job_id}:{token}@{rest}"),
            None => format!("http://{job_id}:{token}@{proxy}"),
        };
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            set(&mut manifest, var, with_creds.clone(), true);
        }
        for var in ["NO_PROXY", "no_proxy"] {
            set(&mut manifest, var, no_proxy.clone(), false);
        }
    }
    if let Some(t) = trust {
        // OpenSSL (curl, git, Python's ssl), requests and Go read a whole
        // bundle; Node adds the extra CA to its own roots.
        for var in [
            "SSL_CERT_FILE",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            set(&mut manifest, var, t.bundle.display().to_string(), false);
        }
        set(
            &mut manifest,
            "NODE_EXTRA_CA_CERTS",
            t.ca.display().to_string(),
            false,
        );
    }
    if let Some(base) = &spec.anthropic_base_url {
        set(&mut manifest, "ANTHROPIC_BASE_URL", base.clone(), false);
        let key = EgressSpec::placeholder_key(job_id, token);
        set(&mut manifest, "ANTHROPIC_API_KEY", key, true);
        if spec.proxy_url.is_none() {
            // Without a proxy no NO_PROXY was set; tools that read it anyway
            // must still reach the gateway directly.
            for var in ["NO_PROXY", "no_proxy"] {
                set(&mut manifest, var, no_proxy.clone(), false);
            }
        }
    }
    manifest
}

/// `url` with its scheme and authority replaced by `base`'s, its path kept.
fn rebase(url: &str, base: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{}{path}", base.trim_end_matches('/'))
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => authority,
    };
    (!host.is_empty()).then(|| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn manifest() -> JobManifest {
        serde_json::from_value(serde_json::json!({"task": "x", "agentType": "claude"})).unwrap()
    }

    #[test]
    fn no_spec_changes_nothing() {
        assert_eq!(apply(manifest(), None, None, None, "j", "t"), manifest());
    }

    #[test]
    fn proxy_anthropic_and_secrets_become_redacted_variables() {
        let spec = EgressSpec {
            proxy_url: Some("http://10.0.2.2:8766".into()),
            anthropic_base_url: Some("http://10.0.2.2:8766/anthropic".into()),
            secret_env: BTreeMap::from([("GITHUB_TOKEN".into(), "ghp_x".into())]),
            ca_pem: None,
        };
        let m = apply(manifest(), Some(&spec), None, None, "job-1", "tok");
        assert_eq!(m.env["HTTPS_PROXY"], "http://job-1:tok@10.0.2.2:8766");
        assert_eq!(m.env["http_proxy"], m.env["HTTPS_PROXY"]);
        assert_eq!(m.env["NO_PROXY"], "localhost,127.0.0.1,::1,10.0.2.2");
        assert_eq!(
            m.env["ANTHROPIC_BASE_URL"],
            "http://10.0.2.2:8766/anthropic"
        );
        assert_eq!(m.env["ANTHROPIC_API_KEY"], "delegate.job-1.tok");
        assert_eq!(m.env["GITHUB_TOKEN"], "ghp_x");
        let values = m.secret_values();
        for secret in [
            "ghp_x",
            "delegate.job-1.tok",
            "http://job-1:tok@10.0.2.2:8766",
        ] {
            assert!(values.contains(&secret), "{secret} not redacted");
        }
        m.validate().unwrap();
    }

    #[test]
    fn the_providers_address_replaces_the_hosts() {
        let spec = EgressSpec {
            proxy_url: Some("http://10.0.2.2:8766".into()),
            anthropic_base_url: Some("http://10.0.2.2:8766/anthropic".into()),
            secret_env: BTreeMap::new(),
            ca_pem: None,
        };
        let m = apply(
            manifest(),
            Some(&spec),
            Some("http://127.0.0.1:41000"),
            None,
            "job-1",
            "tok",
        );
        assert_eq!(m.env["HTTP_PROXY"], "http://job-1:tok@127.0.0.1:41000");
        assert_eq!(
            m.env["ANTHROPIC_BASE_URL"],
            "http://127.0.0.1:41000/anthropic"
        );
        assert_eq!(m.env["no_proxy"], "localhost,127.0.0.1,::1,127.0.0.1");
    }

    #[test]
    fn the_gateways_ca_joins_the_system_bundle_and_every_tool_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let t = write_trust(pem, &dir.path().join("trust")).unwrap();
        assert_eq!(std::fs::read_to_string(&t.ca).unwrap(), pem);
        let bundle = std::fs::read_to_string(&t.bundle).unwrap();
        assert!(bundle.ends_with(pem), "the CA is appended");
        let spec = EgressSpec {
            proxy_url: Some("http://10.0.2.2:8766".into()),
            anthropic_base_url: None,
            secret_env: BTreeMap::new(),
            ca_pem: Some(pem.into()),
        };
        let m = apply(manifest(), Some(&spec), None, Some(&t), "j", "t");
        for var in [
            "SSL_CERT_FILE",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            assert_eq!(m.env[var], t.bundle.display().to_string(), "{var}");
        }
        assert_eq!(m.env["NODE_EXTRA_CA_CERTS"], t.ca.display().to_string());
    }
}
