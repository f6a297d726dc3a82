//! The real `delegate-guest boot` given a host with an egress gateway: the
//! job's environment gets the proxy variables (with the job's credentials),
//! the Anthropic endpoint and placeholder key, and the host-held secrets it
//! named, and every one of those values is redacted from its output.

use std::collections::BTreeMap;

use delegate_proto::network::EgressSpec;
use delegate_proto::{LogStream, ResultStatus};

use crate::callback_e2e::{boot, finish, log_text, script};
use crate::support::host::{JOB_ID, TestHost, token};

const SECRET: &str = "ghp_from_the_host_31337";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_gets_the_gateway_and_its_secrets_and_prints_none_of_them() {
    let proxy = format!("http://{JOB_ID}:{}@127.0.0.1:9", token());
    // The script checks the values itself, then prints them: the log must
    // show them redacted.
    let check = format!(
        r#"test "$HTTPS_PROXY" = "{proxy}" && test "$http_proxy" = "$HTTPS_PROXY" \
        && test "$ANTHROPIC_API_KEY" = "delegate.{JOB_ID}.{token}" \
        && test "$GITHUB_TOKEN" = "{SECRET}" || exit 3
        echo "proxy=$HTTPS_PROXY key=$ANTHROPIC_API_KEY gh=$GITHUB_TOKEN"
        echo "base=$ANTHROPIC_BASE_URL no=$NO_PROXY""#,
        token = token()
    );
    let host = TestHost::start_with(script(&check, &[])).await;
    host.state().spec.as_mut().unwrap().egress = Some(EgressSpec {
        proxy_url: Some("http://127.0.0.1:9".into()),
        anthropic_base_url: Some("http://127.0.0.1:9/anthropic".into()),
        secret_env: BTreeMap::from([("GITHUB_TOKEN".into(), SECRET.into())]),
        ca_pem: None,
    });
    let (code, stderr) = finish(boot(&host)).await;
    assert_eq!(code, 0, "{stderr}");
    let result = host.state().result.clone().expect("a result");
    assert_eq!(result.status, ResultStatus::Success, "{result:?}");
    let out = log_text(&host.events(), LogStream::Stdout);
    assert!(out.contains("proxy=*** key=*** gh=***"), "{out}");
    assert!(
        out.contains("base=http://127.0.0.1:9/anthropic no=localhost,127.0.0.1,::1,127.0.0.1"),
        "{out}"
    );
    for secret in [SECRET, token().as_str()] {
        assert!(!out.contains(secret), "{out}");
        assert!(!serde_json::to_string(&result).unwrap().contains(secret));
    }
}
