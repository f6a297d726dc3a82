//! `GET control` over real HTTP on 127.0.0.1: held until the job must
//! stop (cancel, lost lease) or the wait passes, one held request per job,
//! answered at once when the host shuts down, and token-checked like every
//! other route.

use std::time::{Duration, Instant};

use delegate_proto::JobState;
use delegate_proto::api::{self, ControlAction, ControlAnswer};
use reqwest::{Method, StatusCode};

use crate::callback_security::{code, setup};
use crate::support::guest::GuestClient;

impl GuestClient {
    async fn control(&self, wait_secs: u64) -> reqwest::Response {
        self.req(Method::GET, api::control_path(&self.job_id, wait_secs))
            .send()
            .await
            .unwrap()
    }
}

async fn answer(resp: reqwest::Response) -> ControlAnswer {
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_hears_a_cancel_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    assert_eq!(g.manifest().await.status(), StatusCode::OK);

    // Nothing happens: `continue` once the wait passes, not before.
    let t = Instant::now();
    let a = answer(g.control(1).await).await;
    assert_eq!(
        (a.action, a.state),
        (ControlAction::Continue, JobState::Running)
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    let held = tokio::spawn({
        let g = g.clone();
        async move {
            let r = g.control(api::MAX_CONTROL_WAIT_SECS).await;
            (answer(r).await, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_at = Instant::now();
    host.manager().cancel(&g.job_id).await.unwrap();
    let (a, answered_at) = held.await.unwrap();
    assert_eq!(
        (a.action, a.state),
        (ControlAction::Stop, JobState::Cancelled)
    );
    // Answered by the cancel, not by the held request running out (how fast
    // is the cancel benchmark's business).
    let latency = answered_at - cancelled_at;
    assert!(
        latency < Duration::from_secs(api::MAX_CONTROL_WAIT_SECS / 2),
        "{latency:?}"
    );

    // Within the cancel grace the token still asks, and hears `stop` at once.
    let t = Instant::now();
    let a = answer(g.control(api::MAX_CONTROL_WAIT_SECS).await).await;
    assert_eq!(a.action, ControlAction::Stop);
    assert!(t.elapsed() < Duration::from_secs(api::MAX_CONTROL_WAIT_SECS / 2));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_tells_the_guest_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 1, |s| {
        s.heartbeat_threshold = Duration::from_secs(2);
    })
    .await;
    let g = &guests[0];
    assert_eq!(g.manifest().await.status(), StatusCode::OK);
    // No events: the lease runs out while the request is held.
    let t = Instant::now();
    let a = answer(g.control(api::MAX_CONTROL_WAIT_SECS).await).await;
    assert_eq!((a.action, a.state), (ControlAction::Stop, JobState::Failed));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_held_request_per_job_and_none_past_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (host, guests) = setup(dir.path(), 2, |_| {}).await;
    let (a, b) = (&guests[0], &guests[1]);
    let hold = |g: &GuestClient| {
        let g = g.clone();
        tokio::spawn(async move {
            let r = g.control(api::MAX_CONTROL_WAIT_SECS).await;
            (answer(r).await, Instant::now())
        })
    };
    let first = hold(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A newer request for the same job ends the older one with `continue`.
    let second = hold(a);
    let (ans, _) = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the older request is answered at once")
        .unwrap();
    assert_eq!(ans.action, ControlAction::Continue);
    let other = hold(b);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A malformed query is refused before anything is held.
    let resp = a
        .req(
            Method::GET,
            format!(
                "{}?wait=soon",
                api::control_path(&a.job_id, 0).split('?').next().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(resp).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );

    // Shutting down answers the held requests instead of waiting them out.
    let t = Instant::now();
    host.stop().await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    for held in [second, other] {
        let (ans, _) = held.await.unwrap();
        assert_eq!(ans.action, ControlAction::Continue);
    }
}
