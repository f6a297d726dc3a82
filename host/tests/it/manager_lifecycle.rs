//! The job manager end to end with a provider double whose guests speak
//! the real callback protocol over HTTP: the store, the callback API and
//! the scheduler are the real ones.

use std::sync::Arc;
use std::time::Duration;

use delegate_host::jobs::JobChangeKind;
use delegate_host::model::{CancelOutcome, LogSelector};
use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobState, LogStream};

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, eventually, job, settings, until_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_success_with_logs_artifacts_and_one_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    let mut changes = m.subscribe();

    let rec = m.submit(job("run=600 artifacts")).await.unwrap();
    assert_eq!(rec.state, JobState::Pending);
    let mut seen = Vec::new();
    let done = m
        .wait(&rec.id, Duration::from_secs(30), |r| seen.push(r.state))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    assert!(seen.contains(&JobState::Running), "{seen:?}");
    assert!(done.started_at.is_some() && done.completed_at.is_some());
    assert_eq!(done.error, None);
    let result = done.result.as_ref().expect("result stored");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(done.artifacts.len(), 1);
    assert_eq!(done.artifacts[0].path, "out/result.txt");
    assert_eq!(
        m.read_artifact(&rec.id, "out/result.txt", 1024).unwrap(),
        format!("job {} done\n", rec.id).into_bytes()
    );
    assert!(m.artifact_archive(&rec.id).unwrap().is_some());

    // Logs by cursor, in two reads.
    let first = m
        .read_log(&rec.id, LogSelector::Stream(LogStream::Stdout), 0, 7)
        .unwrap();
    assert_eq!(first.data, b"line 1\n");
    let rest = m
        .read_log(
            &rec.id,
            LogSelector::Stream(LogStream::Stdout),
            first.next_cursor,
            1 << 20,
        )
        .unwrap();
    assert!(
        String::from_utf8(rest.data)
            .unwrap()
            .starts_with("line 2\n")
    );
    assert!(rest.complete);

    // The VM is destroyed exactly once.
    let vms = fake.vms_of(&rec.id);
    assert_eq!(vms.len(), 1);
    eventually(10, "the VM to be destroyed", || async {
        m.get(&rec.id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    assert_eq!(fake.destroy_count(&vms[0]), 1);

    let mut kinds = Vec::new();
    while let Ok(c) = changes.try_recv() {
        if c.job_id == rec.id {
            kinds.push(c.kind);
        }
    }
    for k in [
        JobChangeKind::State,
        JobChangeKind::Progress,
        JobChangeKind::Log,
        JobChangeKind::Artifacts,
        JobChangeKind::Result,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    let metrics = m.render_metrics().await.unwrap();
    assert!(
        metrics.contains("delegate_jobs{state=\"success\"} 1"),
        "{metrics}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_waits_for_the_vm_to_be_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    fake.rec().destroy_delay = Duration::from_secs(1);
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    let rec = m.submit(job("run=10")).await.unwrap();
    let done = m
        .wait(&rec.id, Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    // Final, but its VM is still being destroyed: an engine stopped now
    // would leave it behind.
    assert!(!m.settled(&rec.id, Duration::ZERO).await);
    assert!(m.settled(&rec.id, Duration::from_secs(30)).await);
    assert_eq!(fake.alive(), 0);
    assert!(m.get(&rec.id).unwrap().vm_destroyed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_and_pending_jobs_start_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let s = settings(dir.path(), |s| {
        s.max_running = 2;
        s.max_provisioning = 1;
    });
    let host = Host::start(s, Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(m.submit(job("provision=150 run=300")).await.unwrap().id);
    }
    // Beyond the limits, jobs wait as pending.
    let waiting = m.list(Some(JobState::Pending), 10, None).unwrap();
    assert!(waiting.items.len() >= 3, "{:?}", waiting.items);
    for id in &ids {
        let r = m.wait(id, Duration::from_secs(60), |_| {}).await.unwrap();
        assert_eq!(r.state, JobState::Success, "{r:?}");
    }
    {
        let rec = fake.rec();
        assert_eq!(rec.provision_order, ids, "jobs start in submission order");
        assert!(rec.max_alive <= 2, "max VMs alive {}", rec.max_alive);
        assert_eq!(rec.max_provisioning, 1);
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_cover_provisioning_and_running() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    let mut in_prov = job("provision=hang");
    in_prov.timeout = Some(1);
    let mut running = job("hang");
    running.timeout = Some(2);
    let a = m.submit(in_prov).await.unwrap().id;
    let b = m.submit(running).await.unwrap().id;
    for (id, phrase) in [(&a, "provisioned"), (&b, "ran past")] {
        let r = m.wait(id, Duration::from_secs(30), |_| {}).await.unwrap();
        assert_eq!(r.state, JobState::Timeout, "{r:?}");
        assert_eq!(r.error_kind, Some(ErrorKind::Timeout));
        assert!(r.error.as_deref().unwrap().contains(phrase), "{r:?}");
        eventually(20, "VM destroyed", || async {
            m.get(id).unwrap().vm_destroyed.then_some(())
        })
        .await;
        for vm in fake.vms_of(id) {
            assert_eq!(fake.destroy_count(&vm), 1, "{vm}");
        }
    }
    // The running guest was told to stop and reported within the grace.
    let r = m.get(&b).unwrap();
    assert_eq!(r.state, JobState::Timeout);
    assert!(r.result.is_some(), "late result kept: {r:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_guest_loses_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let s = settings(dir.path(), |s| {
        s.heartbeat_threshold = Duration::from_secs(2);
    });
    let host = Host::start(s, Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    // Persistent or not, a lost guest's VM is destroyed.
    let mut silent = job("silent");
    silent.lifecycle = Some(delegate_proto::Lifecycle::Persistent);
    let id = m.submit(silent).await.unwrap().id;
    let r = m.wait(&id, Duration::from_secs(30), |_| {}).await.unwrap();
    assert_eq!(r.state, JobState::Failed);
    assert_eq!(r.error_kind, Some(ErrorKind::Lost));
    assert!(r.error.unwrap().contains("heartbeat"));
    eventually(10, "VM destroyed", || async {
        m.get(&id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    // A guest that keeps sending heartbeats keeps its lease.
    let ok = m.submit(job("run=4000")).await.unwrap().id;
    let r = m.wait(&ok, Duration::from_secs(30), |_| {}).await.unwrap();
    assert_eq!(r.state, JobState::Success, "{r:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_works_in_every_non_final_state() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let s = settings(dir.path(), |s| {
        s.max_running = 2;
    });
    let host = Host::start(s, Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    let running = m.submit(job("hang")).await.unwrap().id;
    let provisioning = m.submit(job("provision=hang")).await.unwrap().id;
    let pending = m.submit(job("run=10")).await.unwrap().id;
    until_state(&m, &running, JobState::Running, 20).await;
    until_state(&m, &provisioning, JobState::Provisioning, 20).await;
    eventually(10, "the provisioning VM to exist", || async {
        m.get(&provisioning).unwrap().vm.map(|_| ())
    })
    .await;
    assert_eq!(m.get(&pending).unwrap().state, JobState::Pending);

    for id in [&pending, &provisioning, &running] {
        match m.cancel(id).await.unwrap() {
            CancelOutcome::Cancelled(r) => assert_eq!(r.state, JobState::Cancelled),
            other => panic!("{other:?}"),
        }
    }
    for id in [&provisioning, &running] {
        eventually(20, "VM destroyed", || async {
            m.get(id).unwrap().vm_destroyed.then_some(())
        })
        .await;
        let vms = fake.vms_of(id);
        assert_eq!(vms.len(), 1, "{id}");
        assert_eq!(fake.destroy_count(&vms[0]), 1);
    }
    assert!(
        fake.vms_of(&pending).is_empty(),
        "a cancelled pending job never starts"
    );
    // The running guest stopped and reported inside the grace period.
    let r = m.get(&running).unwrap();
    assert_eq!(r.state, JobState::Cancelled);
    assert!(r.result.is_some());
    assert_eq!(r.error_kind, Some(ErrorKind::Cancelled));
    // Final jobs are left alone.
    assert!(matches!(
        m.cancel(&running).await.unwrap(),
        CancelOutcome::AlreadyFinal(_)
    ));
    assert!(matches!(
        m.cancel("no-such-job").await,
        Err(delegate_host::jobs::JobError::NotFound(_))
    ));
    assert_eq!(fake.alive(), 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_vms_are_kept_and_retention_prunes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let s = settings(dir.path(), |s| {
        s.retention = Some(Duration::from_secs(2));
    });
    let host = Host::start(s, Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    let mut keep = job("run=100");
    keep.lifecycle = Some(delegate_proto::Lifecycle::Persistent);
    let kept = m.submit(keep).await.unwrap().id;
    let gone = m.submit(job("run=100")).await.unwrap().id;
    for id in [&kept, &gone] {
        assert_eq!(
            m.wait(id, Duration::from_secs(30), |_| {})
                .await
                .unwrap()
                .state,
            JobState::Success
        );
    }
    eventually(30, "the ephemeral job to be pruned", || async {
        m.get(&gone).is_err().then_some(())
    })
    .await;
    assert!(!dir.path().join("logs").join(&gone).exists());
    let r = m.get(&kept).unwrap();
    assert!(!r.vm_destroyed, "persistent VM kept");
    assert_eq!(fake.destroy_count(&fake.vms_of(&kept)[0]), 0);

    // Cancelling a persistent job still destroys its VM.
    let mut hang = job("hang");
    hang.lifecycle = Some(delegate_proto::Lifecycle::Persistent);
    let cancelled = m.submit(hang).await.unwrap().id;
    until_state(&m, &cancelled, JobState::Running, 20).await;
    m.cancel(&cancelled).await.unwrap();
    eventually(
        20,
        "the cancelled persistent VM to be destroyed",
        || async { m.get(&cancelled).unwrap().vm_destroyed.then_some(()) },
    )
    .await;
    assert_eq!(fake.destroy_count(&fake.vms_of(&cancelled)[0]), 1);
    fake.kill_all();
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(FakeProvider::new())).await;
    let err = delegate_host::engine::start_engine_with(
        settings(dir.path(), |_| {}),
        Arc::new(FakeProvider::new()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    host.stop().await;
}
