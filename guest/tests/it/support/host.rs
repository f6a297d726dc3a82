//! A small host speaking the callback API from `delegate_proto::api`, on
//! 127.0.0.1 port 0, that tests can make misbehave: fail the next requests,
//! go down and come back, say cancel, refuse as too large or final.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use delegate_proto::api::{
    self, ApiError, ArtifactsAck, JobSpec, PROTOCOL_HEADER, PROTOCOL_VERSION, ResultAck,
};
use delegate_proto::{
    ArtifactEntry, Event, EventBatch, EventKind, EventsAck, JobManifest, JobResult,
};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

pub const JOB_ID: &str = "0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b";

/// A token of the right shape.
pub fn token() -> String {
    "7c".repeat(32)
}

/// How the host stores events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Like the real host: only gap-free seqs; a `Dropped` event with seq
    /// `s` covering `f..=s` fills the slots it names.
    #[default]
    GapFree,
    /// Only gap-free seqs, and a `Dropped` event fills only its own slot.
    GapFreeNaive,
    /// Any seq, de-duplicated; `highest_seq` is the largest held.
    AnySeq,
}

/// What the host saw and how it is told to behave.
#[derive(Debug, Default)]
pub struct HostState {
    pub spec: Option<JobSpec>,
    pub store: Store,
    /// Events by seq, de-duplicated.
    pub events: BTreeMap<u64, Event>,
    /// Gap-free stores: everything up to here is held or covered.
    pub highest: u64,
    /// Events received again after they were held.
    pub duplicates: u64,
    /// Sizes (event counts) of the accepted batches.
    pub batches: Vec<usize>,
    /// Requests per route name: "manifest", "events", "artifacts", "result",
    /// "control".
    pub requests: BTreeMap<&'static str, u32>,
    /// Requests refused for their token.
    pub unauthorized: u32,
    /// Answer the next N requests (any route) with `fail_status`.
    pub fail_next: u32,
    pub fail_status: u16,
    /// Say cancel in every EventsAck.
    pub cancel: bool,
    /// Serve `GET control` (off: 404, as a host without the route).
    pub control: bool,
    /// Answer held and new control requests with `stop`.
    pub control_stop: bool,
    /// Answer control requests with `continue` at once, ignoring `wait`.
    pub control_at_once: bool,
    /// Answer every events request with this status instead.
    pub events_status: Option<u16>,
    /// Wait this long before answering an events request.
    pub events_delay: Duration,
    /// Largest events body; beyond, 413.
    pub events_body_limit: usize,
    /// Largest artifact upload; beyond, 413 without reading the body.
    pub artifact_limit: u64,
    /// Size and sha256 of the stored artifacts, and their entries.
    pub artifacts: Option<ArtifactsAck>,
    pub result: Option<JobResult>,
    /// Answer the next N result posts with 503 after storing the result,
    /// as if the answer was lost.
    pub lose_result_answers: u32,
    /// Once the result is stored the token is refused with this status
    /// (the real host: 401).
    pub final_status: u16,
}

/// The running host.
pub struct TestHost {
    addr: SocketAddr,
    state: Arc<Mutex<HostState>>,
    server: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl TestHost {
    /// Starts a host for [`JOB_ID`] with a script job.
    pub async fn start() -> TestHost {
        let manifest: JobManifest = serde_json::from_value(serde_json::json!({
            "task": "echo hello",
            "agentType": "script",
        }))
        .unwrap();
        Self::start_with(manifest).await
    }

    /// Starts a host serving `manifest`.
    pub async fn start_with(manifest: JobManifest) -> TestHost {
        let state = HostState {
            spec: Some(JobSpec {
                job_id: JOB_ID.into(),
                manifest,
                timeout_seconds: 600,
                heartbeat_interval_seconds: 1,
                max_artifact_bytes: 1 << 40,
                egress: None,
                turn: None,
            }),
            fail_status: 503,
            events_body_limit: api::MAX_EVENTS_BODY,
            artifact_limit: 1 << 40,
            final_status: 401,
            ..HostState::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let host = TestHost {
            addr,
            state: Arc::new(Mutex::new(state)),
            server: Mutex::new(None),
        };
        host.serve(listener);
        host
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap()
    }

    /// The held events in seq order.
    pub fn events(&self) -> Vec<Event> {
        self.state().events.values().cloned().collect()
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(self.state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        *self.server.lock().unwrap() = Some((tx, task));
    }

    /// Stops listening and closes every connection: clients get
    /// "connection refused" until [`TestHost::come_back`].
    pub async fn go_down(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some((tx, task)) = server {
            let _ = tx.send(());
            task.await.unwrap();
        }
    }

    /// Listens again on the same address, with the same state.
    pub async fn come_back(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Polls `cond` until it holds, failing the test after `within`.
    pub async fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&HostState) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if cond(&self.state()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn router(state: Arc<Mutex<HostState>>) -> Router {
    Router::new()
        .route(api::routes::MANIFEST, get(manifest))
        .route(api::routes::EVENTS, post(events))
        .route(api::routes::ARTIFACTS, put(artifacts))
        .route(api::routes::RESULT, post(result))
        .route(api::routes::CONTROL, get(control))
        .with_state(state)
}

type Shared = State<Arc<Mutex<HostState>>>;

fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
    let body = ApiError {
        code: code.into(),
        message: message.into(),
    };
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// The checks every route makes, in the real host's order: protocol, token,
/// job, then the injected failures.
fn admit(
    state: &mut HostState,
    route: &'static str,
    id: &str,
    headers: &HeaderMap,
) -> Result<(), Box<Response>> {
    *state.requests.entry(route).or_default() += 1;
    let protocol = headers.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
    if protocol != Some(&PROTOCOL_VERSION.to_string()) {
        return Err(Box::new(error(
            400,
            "unsupported_protocol",
            format!("protocol {protocol:?}"),
        )));
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {}", token())) {
        state.unauthorized += 1;
        return Err(Box::new(error(401, "unauthorized", "bad token")));
    }
    if id != JOB_ID {
        return Err(Box::new(error(404, "not_found", "no such job")));
    }
    if state.result.is_some() {
        let status = state.final_status;
        return Err(Box::new(error(status, "conflict", "the job is final")));
    }
    if state.fail_next > 0 {
        state.fail_next -= 1;
        return Err(Box::new(error(
            state.fail_status,
            "internal",
            "injected failure",
        )));
    }
    Ok(())
}

/// `GET control`: held (polled every 10 ms) until `control_stop` or the
/// wait passes.
async fn control(
    State(state): Shared,
    Path(id): Path<String>,
    Query(q): Query<api::ControlQuery>,
    headers: HeaderMap,
) -> Response {
    {
        let mut st = state.lock().unwrap();
        if !st.control {
            return error(404, "not_found", "no such route");
        }
        if let Err(resp) = admit(&mut st, "control", &id, &headers) {
            return *resp;
        }
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(api::MAX_CONTROL_WAIT_SECS));
    let until = Instant::now() + wait;
    let action = loop {
        {
            let st = state.lock().unwrap();
            if st.control_stop {
                break api::ControlAction::Stop;
            }
            if st.control_at_once || Instant::now() >= until {
                break api::ControlAction::Continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let state = match action {
        api::ControlAction::Stop => delegate_proto::JobState::Cancelled,
        api::ControlAction::Continue => delegate_proto::JobState::Running,
    };
    axum::Json(api::ControlAnswer { action, state }).into_response()
}

async fn manifest(State(state): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(resp) = admit(&mut st, "manifest", &id, &headers) {
        return *resp;
    }
    axum::Json(st.spec.clone().unwrap()).into_response()
}

async fn events(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = {
        let mut st = state.lock().unwrap();
        if let Err(resp) = admit(&mut st, "events", &id, &headers) {
            return *resp;
        }
        if let Some(status) = st.events_status {
            return error(status, "conflict", "injected events status");
        }
        st.events_body_limit
    };
    let delay = state.lock().unwrap().events_delay;
    tokio::time::sleep(delay).await;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(413, "too_large", format!("events body over {limit} bytes"));
    };
    let batch: EventBatch = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return error(400, "bad_request", e.to_string()),
    };
    let mut st = state.lock().unwrap();
    st.batches.push(batch.events.len());
    for event in batch.events {
        let dropped_first = match &event.kind {
            EventKind::Dropped {
                first_seq,
                last_seq,
                ..
            } => {
                assert!(
                    first_seq <= last_seq && *last_seq == event.seq,
                    "bad Dropped event {event:?}"
                );
                Some(*first_seq)
            }
            _ => None,
        };
        let held = match st.store {
            Store::AnySeq => st.events.contains_key(&event.seq),
            Store::GapFree | Store::GapFreeNaive => event.seq <= st.highest,
        };
        if held {
            st.duplicates += 1;
            continue;
        }
        let next = st.highest + 1;
        let fits = match st.store {
            Store::AnySeq => true,
            Store::GapFree => event.seq == next || dropped_first.is_some_and(|f| f <= next),
            Store::GapFreeNaive => event.seq == next,
        };
        if !fits {
            break;
        }
        st.highest = st.highest.max(event.seq);
        st.events.insert(event.seq, event);
    }
    let ack = EventsAck {
        highest_seq: st.highest,
        cancel: st.cancel,
    };
    axum::Json(ack).into_response()
}

async fn artifacts(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut body: Body,
) -> Response {
    let limit = {
        let mut st = state.lock().unwrap();
        if let Err(resp) = admit(&mut st, "artifacts", &id, &headers) {
            return *resp;
        }
        st.artifact_limit
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return error(
            413,
            "too_large",
            format!("artifacts exceed the limit of {limit} bytes"),
        );
    }
    // Streamed: hashed chunk by chunk, kept whole only when small enough to
    // list as a tar.gz.
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            return error(400, "bad_request", "body ended early");
        };
        if let Ok(data) = frame.into_data() {
            size += data.len() as u64;
            if size > limit {
                return error(
                    413,
                    "too_large",
                    format!("artifacts exceed the limit of {limit} bytes"),
                );
            }
            hasher.update(&data);
            if size <= 16 * 1024 * 1024 {
                kept.extend_from_slice(&data);
            }
        }
    }
    let entries = if size <= 16 * 1024 * 1024 {
        list_tar_gz(&kept)
    } else {
        Vec::new()
    };
    let ack = ArtifactsAck {
        size,
        sha256: hex(&hasher.finalize()),
        entries,
    };
    state.lock().unwrap().artifacts = Some(ack.clone());
    axum::Json(ack).into_response()
}

/// The files in a tar.gz (empty when it is not one).
fn list_tar_gz(bytes: &[u8]) -> Vec<ArtifactEntry> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let Ok(entries) = archive.entries() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let Ok(mut entry) = entry else {
            return Vec::new();
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        if std::io::Read::read_to_end(&mut entry, &mut data).is_err() {
            return Vec::new();
        }
        out.push(ArtifactEntry {
            path,
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(&data)),
        });
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn result(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(resp) = admit(&mut st, "result", &id, &headers) {
        return *resp;
    }
    let result: JobResult = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(400, "bad_request", e.to_string()),
    };
    let state_after = result.status.job_state();
    st.result = Some(result);
    if st.lose_result_answers > 0 {
        st.lose_result_answers -= 1;
        return error(503, "internal", "stored, but the answer is lost");
    }
    axum::Json(ResultAck { state: state_after }).into_response()
}
