//! The request pipeline, in PVE's order: route against the schema,
//! authenticate (token header, or ticket cookie plus CSRF header on writes),
//! forward to the node (595 when it is down), verify parameters (400 with
//! per-field errors), check permissions from the schema (403), run the
//! operation, and render `{"data": ...}` or the error with PVE's message in
//! the status line.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::SimInner;
use super::ops;
use super::perms::{self, Principal};
use super::schema::{self, RouteError};
use super::state::PveVersion;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// PVE's message.
    pub message: String,
    /// Per-parameter errors.
    pub errors: BTreeMap<String, String>,
    /// Send no body at all (401, 595).
    pub bare: bool,
}

impl ApiError {
    /// A 500 with a message, as a `die` in an API handler gives.
    pub fn die(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: message.into(),
            errors: BTreeMap::new(),
            bare: false,
        }
    }
    /// `400 Parameter verification failed.` with one field's error.
    pub fn param(field: &str, message: impl Into<String>) -> Self {
        let mut errors = BTreeMap::new();
        errors.insert(field.to_string(), message.into());
        Self::params(errors)
    }
    /// `400 Parameter verification failed.` with field errors.
    pub fn params(errors: BTreeMap<String, String>) -> Self {
        ApiError {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
            bare: false,
        }
    }
    fn bare(status: u16, message: &str) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
            bare: true,
        }
    }
}

impl From<String> for ApiError {
    fn from(message: String) -> Self {
        ApiError::die(message)
    }
}

/// The fallback handler serving all of `/api2/json`.
pub async fn handle(
    State(sim): State<Arc<SimInner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut latency = sim.lock().timings.request_latency;
    if method == Method::POST && uri.path().ends_with("/agent/file-write") {
        let mut c = sim.lock();
        latency += c.timings.file_write;
        c.bootstrap_writes_started += 1;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    sim.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let legacy = sim.lock().faults.legacy_error_shape;
    match serve(&sim, &method, &uri, &headers, &body) {
        Ok(data) => (StatusCode::OK, axum::Json(json!({ "data": data }))).into_response(),
        Err(e) => render_error(e, legacy),
    }
}

fn serve(
    sim: &Arc<SimInner>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let Some(path) = uri.path().strip_prefix("/api2/json") else {
        return Err(ApiError::bare(404, "Not Found"));
    };
    let (ep, path_params) = match schema::schema().route(method.as_str(), path) {
        Ok(found) => found,
        Err(RouteError::NotFound | RouteError::MethodNotAllowed) => {
            return Err(ApiError {
                status: 501,
                message: format!("Method '{} {}' not implemented", method, path),
                errors: BTreeMap::new(),
                bare: false,
            });
        }
    };
    let mut params = match *method {
        Method::GET | Method::DELETE => schema::parse_form(uri.query().unwrap_or("")),
        _ => schema::parse_form(&String::from_utf8_lossy(body)),
    };
    let write = *method != Method::GET;

    let principal = if ep.template == "/access/ticket" {
        None
    } else {
        Some(authenticate(sim, headers, write, ep.allowtoken)?)
    };

    {
        let cluster = sim.lock();
        if let Some(node) = path_params.get("node").filter(|_| ep.proxy_to_node) {
            match cluster.nodes.get(node) {
                None => {
                    return Err(ApiError::die(format!(
                        "hostname lookup '{node}' failed - failed to get address info for: \
                         {node}: Name or service not known"
                    )));
                }
                Some(n) if !n.online => return Err(ApiError::bare(595, "No route to host")),
                Some(_) => {}
            }
        }
    }
    let pve8 = sim.lock().version == PveVersion::V8;
    for (k, v) in &path_params {
        params.insert(k.clone(), v.clone());
    }
    schema::validate(ep, &params, pve8).map_err(ApiError::params)?;

    {
        let mut cluster = sim.lock();
        if super::state::take_fault(&mut cluster.faults.server_errors) {
            return Err(ApiError::bare(500, "Internal Server Error"));
        }
    }

    if let Some(who) = &principal {
        let rules = if pve8 {
            ep.permissions_v8.as_ref().unwrap_or(&ep.permissions)
        } else {
            &ep.permissions
        };
        perms::check(rules, who, &params).map_err(|d| ApiError {
            status: 403,
            message: d.to_string(),
            errors: BTreeMap::new(),
            bare: false,
        })?;
    }
    ops::dispatch(
        sim,
        principal.as_ref(),
        method.as_str(),
        &ep.template,
        &params,
    )
}

fn authenticate(
    sim: &SimInner,
    headers: &HeaderMap,
    write: bool,
    allowtoken: bool,
) -> Result<Principal, ApiError> {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let Some(rest) = auth.strip_prefix("PVEAPIToken=") else {
            return Err(ApiError::bare(401, "authentication failure"));
        };
        // USER@REALM!NAME=SECRET (a secret holds no '=', a UUID).
        let Some((id, secret)) = rest.rsplit_once('=') else {
            return Err(ApiError::bare(401, "authentication failure"));
        };
        let tokens = sim.tokens.lock().unwrap_or_else(|e| e.into_inner());
        return match tokens.get(id) {
            Some((s, p)) if s == secret => {
                if !allowtoken {
                    return Err(ApiError::bare(401, "API tokens are not allowed here"));
                }
                Ok(p.clone())
            }
            _ => Err(ApiError::bare(401, "authentication failure")),
        };
    }
    let cookie = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("PVEAuthCookie=").map(str::to_string));
    let Some(ticket) = cookie else {
        return Err(ApiError::bare(401, "No ticket"));
    };
    let tickets = sim.tickets.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = tickets.get(&ticket) else {
        return Err(ApiError::bare(401, "invalid PVE ticket"));
    };
    if t.issued.elapsed() > sim.ticket_lifetime {
        return Err(ApiError::bare(401, "invalid PVE ticket"));
    }
    if write {
        let csrf = headers
            .get("csrfpreventiontoken")
            .and_then(|v| v.to_str().ok());
        if csrf != Some(t.csrf.as_str()) {
            return Err(ApiError::bare(
                401,
                "Permission denied - invalid csrf token",
            ));
        }
    }
    Ok(t.principal.clone())
}

fn render_error(e: ApiError, legacy: bool) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let first_line = e.message.lines().next().unwrap_or("").to_string();
    let mut resp = if e.bare {
        (status, "").into_response()
    } else {
        let mut body = json!({ "data": Value::Null });
        if !legacy {
            body["message"] = Value::String(format!("{}\n", e.message));
        }
        if !e.errors.is_empty() {
            body["errors"] = json!(
                e.errors
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(format!("{v}\n"))))
                    .collect::<serde_json::Map<_, _>>()
            );
        }
        (status, axum::Json(body)).into_response()
    };
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(first_line.into_bytes()) {
        resp.extensions_mut().insert(reason);
    }
    resp
}
