//! The control long poll the uplink runs beside itself: a `stop` from the
//! host cancels at once, with no event sent; a host that answers at once
//! is not asked in a tight loop; a host without the route changes nothing.

use std::time::{Duration, Instant};

use delegate_guest::callback::CallbackOptions;
use delegate_proto::Phase;

use crate::support::fixtures::{client, opts, phase};
use crate::support::host::TestHost;

fn control_opts(wait_secs: u64) -> CallbackOptions {
    CallbackOptions {
        control_wait: Duration::from_secs(wait_secs),
        ..opts()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_the_control_poll_cancels_at_once() {
    let host = TestHost::start().await;
    host.state().control = true;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, control_opts(30)).start_uplink(spool.path().join("spool"));
    let mut cancelled = uplink.cancelled();
    host.wait_for("a held control request", Duration::from_secs(10), |s| {
        s.requests.get("control").is_some_and(|n| *n >= 1)
    })
    .await;
    assert!(!*cancelled.borrow());
    let t = Instant::now();
    host.state().control_stop = true;
    // Held for 30 s: heard well before that, it came on the held request
    // (how fast is the cancel benchmark's business).
    tokio::time::timeout(Duration::from_secs(15), cancelled.wait_for(|c| *c))
        .await
        .expect("the stop is heard on the held request")
        .unwrap();
    eprintln!("stop heard after {:?}", t.elapsed());
    // It came on the control poll: the quiet job sent no event.
    assert_eq!(host.state().requests.get("events"), None);
    let report = uplink.flush(Duration::from_secs(10)).await;
    assert!(report.cancelled, "{report:?}");
    assert_eq!(host.state().requests["control"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_answering_at_once_is_not_asked_in_a_tight_loop() {
    let host = TestHost::start().await;
    {
        let mut st = host.state();
        st.control = true;
        st.control_at_once = true;
    }
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, control_opts(30)).start_uplink(spool.path().join("spool"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = host.state().requests["control"];
    // Backoff from 20 ms up to 200 ms: about ten requests, not thousands.
    assert!((2..=30).contains(&asked), "{asked} control requests in 1 s");
    assert!(!*uplink.cancelled().borrow());
    uplink.flush(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_route_cancels_still_come_with_event_acks() {
    let host = TestHost::start().await;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, control_opts(30)).start_uplink(spool.path().join("spool"));
    let mut cancelled = uplink.cancelled();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*cancelled.borrow(), "a 404 on control is no cancel");
    host.state().cancel = true;
    uplink.send(phase(1, Phase::Running));
    tokio::time::timeout(Duration::from_secs(10), cancelled.wait_for(|c| *c))
        .await
        .expect("the cancel in the event ack is seen")
        .unwrap();
    uplink.flush(Duration::from_secs(10)).await;
}
