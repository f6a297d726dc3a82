//! The Anthropic endpoint: a `claude` job's `ANTHROPIC_BASE_URL` is
//! `<gateway>/anthropic`, its API key a placeholder naming the job. The
//! gateway checks the placeholder, replaces it with the host's credential
//! (`x-api-key`, or an OAuth bearer token) and forwards to the upstream API
//! over TLS, so the real key never enters the VM. The job speaks plain HTTP
//! to the gateway: no TLS interception is needed for this.

use std::sync::Arc;

use delegate_proto::AgentType;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode, Uri};

use super::forward::{send, strip_hop_by_hop};
use super::log::{ConnRecord, Via};
use super::secrets::AnthropicCredential;
use super::upstream;
use super::{Body, Req, Shared, Upstream, auth, connect, deny, failed, text};

/// The path prefix of the endpoint.
pub(super) const PREFIX: &str = "/anthropic";
/// The beta flag the API needs for OAuth tokens.
const OAUTH_BETA: &str = "oauth-2025-04-20";

pub(super) async fn handle(shared: Arc<Shared>, req: Req) -> Response<Body> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let creds = auth::parse_placeholder(header("x-api-key"), header("authorization"));
    let Some((id, token)) = creds else {
        return text(
            StatusCode::UNAUTHORIZED,
            "use the placeholder key delegate-guest set in ANTHROPIC_API_KEY",
        );
    };
    let Some(job) = auth::authenticate(&shared.store, id, token).await else {
        return text(StatusCode::UNAUTHORIZED, "unknown job or wrong token");
    };
    let up = shared.settings.anthropic_upstream.clone();
    if job.manifest.agent_type != AgentType::Claude {
        let why = "only claude jobs use the host's Anthropic credential".to_string();
        return deny(&shared, &job.id, &up.host, up.port, Via::Anthropic, why).await;
    }
    let Some(credential) = shared.settings.secrets.anthropic() else {
        let why = "this host holds no Anthropic credential (secret anthropic or claude-oauth)"
            .to_string();
        return deny(&shared, &job.id, &up.host, up.port, Via::Anthropic, why).await;
    };
    let Upstream {
        stream: tcp,
        counted,
    } = match connect(&shared, &job.id, &up.host, up.port, Via::Anthropic).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };

    let mut req = req;
    let rest = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let rest = rest.strip_prefix(PREFIX).unwrap_or(rest);
    let path = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove("x-api-key");
    headers.remove(hyper::header::AUTHORIZATION);
    let host = if (up.tls && up.port == 443) || (!up.tls && up.port == 80) {
        up.host.clone()
    } else {
        format!("{}:{}", up.host, up.port)
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        headers.insert(hyper::header::HOST, v);
    }
    let injected = match &credential {
        AnthropicCredential::ApiKey(key) => {
            HeaderValue::from_str(key.expose()).map(|v| ("x-api-key", v))
        }
        AnthropicCredential::OAuth(tok) => {
            let beta = headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok())
                .map_or(OAUTH_BETA.to_string(), |b| {
                    if b.contains(OAUTH_BETA) {
                        b.to_string()
                    } else {
                        format!("{b},{OAUTH_BETA}")
                    }
                });
            if let Ok(v) = HeaderValue::from_str(&beta) {
                headers.insert("anthropic-beta", v);
            }
            HeaderValue::from_str(&format!("Bearer {}", tok.expose())).map(|v| ("authorization", v))
        }
    };
    match injected {
        Ok((name, mut value)) => {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the host's Anthropic credential is not a valid header value",
            );
        }
    }

    let record = ConnRecord::now(&up.host, up.port, Via::Anthropic);
    if !up.tls {
        return send(shared, job.id, record, (tcp, counted), req).await;
    }
    match upstream::tls(&shared, &up.host, tcp).await {
        Ok(tls) => send(shared, job.id, record, (tls, counted), req).await,
        Err(why) => failed(&shared, &job.id, record, why).await,
    }
}
