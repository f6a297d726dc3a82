//! What the guest is told about the gateway for one job ([`EgressSpec`]):
//! the proxy URL when the job has a network policy, the Anthropic endpoint
//! when a `claude` job brings no key of its own and the host holds one,
//! the `secretEnv` values, and the gateway's CA certificate when it
//! injects credentials for some hosts.

use delegate_proto::network::EgressSpec;
use delegate_proto::{AgentType, JobManifest};

use super::anthropic::PREFIX;
use super::settings::EgressSettings;

/// Variables through which a job could bring its own Anthropic credential.
const OWN_KEY_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// The spec for `manifest`; `None` when there is nothing to tell.
/// `secretEnv` names are checked at submit; one that has since vanished
/// from the host is left out (the job then fails where it needs it).
pub fn spec_for(settings: &EgressSettings, manifest: &JobManifest) -> Option<EgressSpec> {
    let gateway = settings.listen.and(settings.url.clone());
    let proxy_url = manifest.network.as_ref().and(gateway.clone());
    let brings_own = OWN_KEY_VARS
        .iter()
        .any(|v| manifest.env.contains_key(*v) || manifest.secret_env.contains_key(*v));
    let anthropic_base_url = gateway
        .filter(|_| manifest.agent_type == AgentType::Claude && !brings_own)
        .filter(|_| settings.secrets.anthropic().is_some())
        .map(|url| format!("{url}{PREFIX}"));
    let secret_env = manifest
        .secret_env
        .iter()
        .filter_map(|(var, name)| {
            let value = settings.secrets.get(name)?;
            Some((var.clone(), value.expose().to_string()))
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    if proxy_url.is_none() && anthropic_base_url.is_none() && secret_env.is_empty() {
        return None;
    }
    let ca_pem = proxy_url
        .as_ref()
        .and(settings.ca.as_ref())
        .map(|ca| ca.cert_pem.clone());
    Some(EgressSpec {
        proxy_url,
        anthropic_base_url,
        secret_env,
        ca_pem,
    })
}
