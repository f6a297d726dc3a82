//! The callback API over real HTTP on 127.0.0.1: tokens (none, wrong,
//! another job's, after the job is final), body caps on every route,
//! duplicate and out-of-order event batches, late results, unsafe
//! archives, `/healthz` and `/metrics` (on their own listener only). The
//! test plays the guest with the bootstrap the provider double received.
//! `callback_control` uses its set-up.

use std::time::Duration;

use delegate_host::model::LogSelector;
use delegate_proto::api::{self, ApiError, PROTOCOL_HEADER};
use delegate_proto::event::{Event, EventKind, EventsAck, LogChunk, Phase};
use delegate_proto::{JobState, LogStream, ResultStatus};
use reqwest::{Method, StatusCode};

use crate::support::guest::{GuestClient, host_with_silent_jobs};
use crate::support::harness::{Host, eventually};
use crate::support::tar::{Entry, tar_gz};

const ARTIFACT_CAP: u64 = 64 * 1024;

pub(crate) fn log(seq: u64, offset: u64, text: &str) -> Event {
    Event {
        seq,
        time_ms: 0,
        kind: EventKind::Log(LogChunk::new(LogStream::Stdout, offset, text.as_bytes())),
    }
}

pub(crate) async fn code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: ApiError = resp.json().await.unwrap_or(ApiError {
        code: "?".into(),
        message: "?".into(),
    });
    (status, body.code)
}

/// A host with the test as the guest of `n` silent jobs, artifacts
/// capped at [`ARTIFACT_CAP`].
pub(crate) async fn setup(
    dir: &std::path::Path,
    n: usize,
    tweak: impl FnOnce(&mut delegate_host::config::Settings),
) -> (Host, Vec<GuestClient>) {
    let (host, _fake, guests) = host_with_silent_jobs(dir, n, |s| {
        s.max_artifact_bytes = ARTIFACT_CAP;
        tweak(s);
    })
    .await;
    (host, guests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_per_job_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 2, |_| {}).await;
    let (a, b) = (&guests[0], &guests[1]);
    let http = reqwest::Client::new();
    let routes = [
        (Method::GET, api::manifest_path(&a.job_id)),
        (Method::POST, api::events_path(&a.job_id)),
        (Method::PUT, api::artifacts_path(&a.job_id)),
        (Method::POST, api::result_path(&a.job_id)),
        (Method::GET, api::control_path(&a.job_id, 0)),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", host.base_url());
        let cases = [
            ("no token", None),
            ("wrong token", Some("0".repeat(64))),
            ("another job's token", Some(b.token().to_string())),
            ("not bearer", Some(String::new())),
        ];
        for (what, token) in cases {
            let mut rb = http
                .request(method.clone(), &url)
                .header(PROTOCOL_HEADER, "1")
                .body("{}");
            match (what, &token) {
                ("not bearer", _) => {
                    rb = rb.header("authorization", format!("Basic {}", a.token()))
                }
                (_, Some(t)) => rb = rb.bearer_auth(t),
                _ => {}
            }
            let (status, c) = code(rb.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {what}");
            assert_eq!(c, "unauthorized");
        }
    }
    // An unknown job and a path-like id answer the same as a wrong token.
    for id in ["00000000-0000-0000-0000-000000000000", "..%2F..%2Fetc"] {
        let resp = http
            .get(format!("{}/v1/jobs/{id}/manifest", host.base_url()))
            .bearer_auth(a.token())
            .header(PROTOCOL_HEADER, "1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{id}");
    }
    // Another protocol version is refused, even with the right token.
    for version in [None, Some("2")] {
        let mut rb = http
            .get(format!(
                "{}{}",
                host.base_url(),
                api::manifest_path(&a.job_id)
            ))
            .bearer_auth(a.token());
        if let Some(v) = version {
            rb = rb.header(PROTOCOL_HEADER, v);
        }
        let (status, c) = code(rb.send().await.unwrap()).await;
        assert_eq!(
            (status, c.as_str()),
            (StatusCode::BAD_REQUEST, "unsupported_protocol")
        );
    }
    // The right token works, and nothing above changed the job.
    assert_eq!(a.manifest().await.status(), StatusCode::OK);
    assert_eq!(
        host.manager().get(&b.job_id).unwrap().state,
        JobState::Provisioning
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_once_its_job_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    let m = host.manager();
    let spec: api::JobSpec = g.manifest().await.json().await.unwrap();
    assert_eq!(spec.job_id, g.job_id);
    assert_eq!(spec.max_artifact_bytes, ARTIFACT_CAP);
    assert_eq!(m.get(&g.job_id).unwrap().state, JobState::Running);
    let ack: api::ResultAck = g.result(ResultStatus::Success).await.json().await.unwrap();
    assert_eq!(ack.state, JobState::Success);
    // Final with its result stored: every route refuses the token.
    assert_eq!(code(g.manifest().await).await.0, StatusCode::CONFLICT);
    assert_eq!(
        code(g.events(vec![log(1, 0, "x")]).await).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        code(g.result(ResultStatus::Failed).await).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        code(g.artifacts(tar_gz(&[Entry::File("a", b"1")])).await)
            .await
            .0,
        StatusCode::CONFLICT
    );
    let r = m.get(&g.job_id).unwrap();
    assert_eq!(r.state, JobState::Success);
    assert_eq!(r.highest_seq, 0);
    assert!(r.artifacts.is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_result_after_cancel_or_timeout_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A grace long enough for a loaded machine: the cancelled job's result
    // must land inside it. The timed-out job ends at 1 ms past the epoch,
    // far outside any grace.
    let (host, guests) = setup(dir.path(), 2, |s| {
        s.cancel_grace = Duration::from_secs(60);
    })
    .await;
    let m = host.manager();
    let (a, b) = (&guests[0], &guests[1]);
    assert_eq!(a.manifest().await.status(), StatusCode::OK);
    assert_eq!(b.manifest().await.status(), StatusCode::OK);

    // Cancelled: the next ack says so; a result in the grace is kept but
    // the state stays cancelled; after it, the token is refused.
    m.cancel(&a.job_id).await.unwrap();
    let ack: EventsAck = a
        .events(vec![log(1, 0, "last words\n")])
        .await
        .json()
        .await
        .unwrap();
    assert!(ack.cancel);
    assert_eq!(ack.highest_seq, 1);
    let ack: api::ResultAck = a.result(ResultStatus::Success).await.json().await.unwrap();
    assert_eq!(ack.state, JobState::Cancelled);
    let r = m.get(&a.job_id).unwrap();
    assert_eq!(r.state, JobState::Cancelled);
    assert!(r.result.is_some());
    assert_eq!(
        code(a.result(ResultStatus::Success).await).await.0,
        StatusCode::CONFLICT
    );

    // Timed out (forced through the store, as the deadline would), and the
    // grace has passed: the result is refused and not stored.
    delegate_host::jobs::rules::transition(m.store(), &b.job_id, JobState::Timeout, None, 1)
        .unwrap();
    assert_eq!(
        code(b.result(ResultStatus::Success).await).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        code(b.events(vec![log(1, 0, "x")]).await).await.0,
        StatusCode::CONFLICT
    );
    let r = m.get(&b.job_id).unwrap();
    assert_eq!(r.state, JobState::Timeout);
    assert!(r.result.is_none());
    assert_eq!(r.highest_seq, 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_out_of_order_batches_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    let m = host.manager();
    g.manifest().await;
    let first = vec![
        Event {
            seq: 1,
            time_ms: 0,
            kind: EventKind::Phase {
                phase: Phase::Running,
                message: None,
            },
        },
        log(2, 0, "a\n"),
        log(3, 2, "b\n"),
    ];
    for _ in 0..3 {
        let ack: EventsAck = g.events(first.clone()).await.json().await.unwrap();
        assert_eq!(ack.highest_seq, 3);
        assert!(!ack.cancel);
    }
    // A batch after a gap is not taken; the ack says where to resume.
    let ack: EventsAck = g.events(vec![log(5, 6, "d\n")]).await.json().await.unwrap();
    assert_eq!(ack.highest_seq, 3);
    let ack: EventsAck = g
        .events(vec![log(4, 4, "c\n"), log(5, 6, "d\n")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack.highest_seq, 5);
    // Reordered within a batch: the in-order prefix is taken.
    let ack: EventsAck = g
        .events(vec![log(7, 10, "f\n"), log(6, 8, "e\n")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack.highest_seq, 5);
    let out = m
        .read_log(&g.job_id, LogSelector::Stream(LogStream::Stdout), 0, 100)
        .unwrap();
    assert_eq!(out.data, b"a\nb\nc\nd\n");
    // A chunk that is neither text nor base64 is a bad request.
    let bad = Event {
        seq: 6,
        time_ms: 0,
        kind: EventKind::Log(LogChunk {
            stream: LogStream::Stdout,
            offset: 8,
            text: None,
            base64: Some("***".into()),
        }),
    };
    assert_eq!(
        code(g.events(vec![bad]).await).await.0,
        StatusCode::BAD_REQUEST
    );
    let resp = g
        .req(Method::POST, api::events_path(&g.job_id))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(code(resp).await.0, StatusCode::BAD_REQUEST);
    host.stop().await;
}

/// Sends only the request head with a `Content-Length` and returns the
/// status code the server answers with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_offset_past_the_largest_is_a_bad_request_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    g.manifest().await;
    // u64::MAX overflows offset + length; i64::MAX cannot be stored.
    for offset in [u64::MAX, i64::MAX as u64] {
        let resp = g.events(vec![log(1, 0, "a\n"), log(2, offset, "x")]).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "offset {offset}");
        let body: ApiError = resp.json().await.unwrap();
        assert_eq!(body.code, "bad_request");
        assert!(
            body.message.contains("events[1].offset"),
            "{}",
            body.message
        );
    }
    // The refused batch changed nothing: the same events, fixed, are taken.
    let ack: EventsAck = g
        .events(vec![log(1, 0, "a\n"), log(2, 2, "x")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ack.highest_seq, 2);
    host.stop().await;
}

async fn raw_status(host: &Host, method: &str, path: &str, token: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = host.base_url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         {PROTOCOL_HEADER}: 1\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn artifact_files(dir: &std::path::Path, job_id: &str) -> Vec<String> {
    std::fs::read_dir(dir.join("artifacts").join(job_id))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_caps_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    let id = &g.job_id;

    // Declared too large: refused from the headers alone, before any body
    // byte is sent (raw HTTP, so nothing but the declaration is tested).
    let big_events = vec![b' '; api::MAX_EVENTS_BODY + 1];
    let big_result = vec![b' '; api::MAX_RESULT_BODY + 1];
    for (method, path, len) in [
        ("GET", api::manifest_path(id), 8192),
        ("GET", api::control_path(id, 0), 8192),
        ("POST", api::events_path(id), api::MAX_EVENTS_BODY + 1),
        ("POST", api::result_path(id), api::MAX_RESULT_BODY + 1),
        ("PUT", api::artifacts_path(id), ARTIFACT_CAP as usize + 1),
    ] {
        let status = raw_status(&host, method, &path, g.token(), len).await;
        assert_eq!(status, 413, "{method} {path}");
    }
    // Streamed without a length: refused once the cap is passed.
    let mut answered = 0;
    for (method, path, body) in [
        (Method::POST, api::events_path(id), big_events),
        (Method::POST, api::result_path(id), big_result),
        (
            Method::PUT,
            api::artifacts_path(id),
            vec![0; ARTIFACT_CAP as usize + 1],
        ),
    ] {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
        let stream = futures_util::stream::iter(chunks);
        let resp = g
            .req(method.clone(), path.clone())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        // The server may answer and close before the client finished
        // sending; when the answer arrives it must be 413.
        match resp {
            Ok(resp) => {
                answered += 1;
                assert_eq!(
                    resp.status(),
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "chunked {method} {path}"
                );
            }
            Err(e) => eprintln!("chunked {method} {path}: {e}"),
        }
    }
    eprintln!("{answered} of 3 chunked uploads got their 413");
    eventually(10, "no partial upload left", || async {
        artifact_files(dir.path(), id).is_empty().then_some(())
    })
    .await;
    let r = host.manager().get(id).unwrap();
    assert!(r.artifacts.is_empty() && r.result.is_none() && r.highest_seq == 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_archives_are_refused_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    g.manifest().await;
    for entries in [
        vec![Entry::File("../x", b"evil")],
        vec![Entry::File("/tmp/evil", b"evil")],
        vec![Entry::Symlink("out/link", "/etc/shadow")],
    ] {
        let (status, c) = code(g.artifacts(tar_gz(&entries)).await).await;
        assert_eq!(
            (status, c.as_str()),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
        assert!(artifact_files(dir.path(), &g.job_id).is_empty());
    }
    assert!(!dir.path().join("artifacts").join("x").exists());
    // Over the cap once decompressed.
    let zeros = vec![0u8; ARTIFACT_CAP as usize + 1];
    let (status, _) = code(g.artifacts(tar_gz(&[Entry::File("z", &zeros)])).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(artifact_files(dir.path(), &g.job_id).is_empty());

    let good = tar_gz(&[Entry::File("out/report.md", b"# ok\n")]);
    let ack: api::ArtifactsAck = g.artifacts(good.clone()).await.json().await.unwrap();
    assert_eq!(ack.size, good.len() as u64);
    assert_eq!(ack.entries.len(), 1);
    assert_eq!(ack.entries[0].path, "out/report.md");
    assert_eq!(artifact_files(dir.path(), &g.job_id), ["artifacts.tar.gz"]);
    assert_eq!(
        host.manager()
            .read_artifact(&g.job_id, "out/report.md", 100)
            .unwrap(),
        b"# ok\n"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_only_on_their_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |s| {
        s.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = reqwest::Client::new();
    let ops = format!(
        "http://{}",
        host.engine.as_ref().unwrap().metrics_addr.unwrap()
    );
    // The callback listener, which every guest reaches, serves neither.
    for path in ["/healthz", "/metrics"] {
        let resp = http
            .get(format!("{}{path}", host.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let h = http.get(format!("{ops}/healthz")).send().await.unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(h.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    guests[0].manifest().await;
    guests[0].events(vec![log(1, 0, "x")]).await;
    let resp = http.get(format!("{ops}/metrics")).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    for line in [
        "# TYPE delegate_jobs gauge",
        "delegate_jobs{state=\"running\"} 1",
        "# TYPE delegate_provisioning_duration_seconds histogram",
        "delegate_provisioning_duration_seconds_count 1",
        "# TYPE delegate_job_duration_seconds histogram",
        "delegate_callback_requests_total{route=\"manifest\",status=\"200\"} 1",
        "delegate_callback_requests_total{route=\"events\",status=\"200\"} 1",
        "delegate_callback_requests_total{route=\"healthz\",status=\"200\"} 1",
        "delegate_guest_events_total 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Every sample line is `name{labels} value` or `name value`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = l.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
    host.stop().await;
}
