//! Hosts where the gateway adds a host-held credential
//! (`DELEGATE_EGRESS_INJECT`): a `CONNECT` there is not a blind tunnel.
//! The gateway answers the job's TLS with a leaf its own CA signed for
//! that host (the guest trusts the CA, name-constrained to these hosts),
//! and sends each request on a connection of its own, TLS to the real host
//! with the real certificate verified, with the credential's header set to
//! the secret. What the job sent in that header is dropped, so a job can
//! neither see nor replace the credential. Every other `CONNECT` stays a
//! tunnel the gateway does not read (`tunnel`).

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::forward::{origin_form, send, strip_hop_by_hop};
use super::log::{ConnRecord, Via};
use super::settings::{EgressSettings, Injection};
use super::{Body, Shared, Upstream, connect, failed, text, upstream};

/// The injection configured for `host`, if any.
pub(super) fn injection_for<'a>(settings: &'a EgressSettings, host: &str) -> Option<&'a Injection> {
    settings
        .injections
        .iter()
        .find(|i| i.host.eq_ignore_ascii_case(host))
}

/// One intercepted tunnel.
pub(super) struct Intercept {
    pub shared: Arc<Shared>,
    pub job_id: String,
    pub host: String,
    pub port: u16,
    pub injection: Injection,
    pub tls: Arc<rustls::ServerConfig>,
}

impl Intercept {
    /// Serves the job's side of the tunnel until it closes.
    pub async fn serve(self, upgraded: Upgraded) {
        let tls = match tokio_rustls::TlsAcceptor::from(self.tls.clone())
            .accept(TokioIo::new(upgraded))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                // Typically a client that does not trust the gateway's CA.
                let why = format!("the job's TLS with the gateway failed: {e}");
                let record = ConnRecord::now(&self.host, self.port, Via::Inject);
                let _ = failed(&self.shared, &self.job_id, record, why).await;
                return;
            }
        };
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.forward(req).await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .await
        {
            tracing::debug!(error = %e, "egress gateway: intercepted connection ended");
        }
    }

    /// One request, with the credential, to the real host.
    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let Some(secret) = self.shared.settings.secrets.get(&self.injection.secret) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the host no longer holds the secret for this host",
            );
        };
        let Ok(mut value) = HeaderValue::from_str(secret.expose()) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the host's secret for this host is not a valid header value",
            );
        };
        value.set_sensitive(true);
        let Upstream {
            stream: tcp,
            counted,
        } = match connect(
            &self.shared,
            &self.job_id,
            &self.host,
            self.port,
            Via::Inject,
        )
        .await
        {
            Ok(s) => s,
            Err(refusal) => return refusal,
        };
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.insert(self.injection.header.clone(), value);
        if !headers.contains_key(hyper::header::HOST)
            && let Ok(h) = HeaderValue::from_str(&self.host)
        {
            headers.insert(hyper::header::HOST, h);
        }
        let uri = origin_form(req.uri());
        *req.uri_mut() = uri;
        let record = ConnRecord::now(&self.host, self.port, Via::Inject);
        match upstream::tls(&self.shared, &self.host, tcp).await {
            Ok(tls) => {
                let upstream = (tls, counted);
                send(
                    self.shared.clone(),
                    self.job_id.clone(),
                    record,
                    upstream,
                    req,
                )
                .await
            }
            Err(why) => failed(&self.shared, &self.job_id, record, why).await,
        }
    }
}
