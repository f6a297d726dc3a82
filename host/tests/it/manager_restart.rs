//! Restart: the engine stops in the middle of jobs and a new one on the
//! same data directory carries them on; another process submits and
//! cancels through the store.

use std::sync::Arc;
use std::time::Duration;

use delegate_host::jobs::JobManager;
use delegate_host::model::CancelOutcome;
use delegate_host::store::Store;
use delegate_proto::JobState;

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, eventually, job, settings, until_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_and_queued_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let first = Host::start(
        settings(dir.path(), |s| s.max_running = 1),
        Arc::new(fake.clone()),
    )
    .await;
    let port = first.port();
    let m = first.manager().clone();
    let running = m.submit(job("run=2500 artifacts")).await.unwrap().id;
    let queued = m.submit(job("run=100")).await.unwrap().id;
    until_state(&m, &running, JobState::Running, 20).await;
    assert_eq!(m.get(&queued).unwrap().state, JobState::Pending);
    first.stop().await;
    drop(m);

    // The guest keeps retrying while no host listens; the new engine takes
    // the same port and the same data.
    let second = Host::start(
        settings(dir.path(), |s| {
            s.max_running = 1;
            s.callback_bind.set_port(port);
        }),
        Arc::new(fake.clone()),
    )
    .await;
    let m = second.manager().clone();
    let r = m
        .wait(&running, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(r.state, JobState::Success, "{r:?}");
    assert_eq!(r.artifacts.len(), 1);
    let q = m
        .wait(&queued, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(q.state, JobState::Success, "{q:?}");
    for id in [&running, &queued] {
        eventually(10, "VM destroyed", || async {
            m.get(id).unwrap().vm_destroyed.then_some(())
        })
        .await;
        assert_eq!(fake.destroy_count(&fake.vms_of(id)[0]), 1);
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_provisioning_is_redone_and_orphans_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let first = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let m = first.manager().clone();
    let id = m.submit(job("provision=1500 run=100")).await.unwrap().id;
    eventually(20, "a VM being provisioned", || async {
        m.get(&id).unwrap().vm.map(|_| ())
    })
    .await;
    first.stop().await;
    drop(m);
    let old_vm = fake.vms_of(&id)[0].clone();

    let second = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let m = second.manager().clone();
    let r = m.wait(&id, Duration::from_secs(60), |_| {}).await.unwrap();
    assert_eq!(r.state, JobState::Success, "{r:?}");
    assert_eq!(fake.vms_of(&id).len(), 2, "provisioned again");
    assert_eq!(
        fake.destroy_count(&old_vm),
        1,
        "the half-made VM is destroyed"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_submits_and_cancels_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let engine = host.manager().clone();

    let s = settings(dir.path(), |_| {});
    let cli = JobManager::connect(Arc::new(s), Store::open(dir.path()).unwrap());
    assert!(!cli.runs_engine());
    let quick = cli.submit(job("run=100")).await.unwrap().id;
    let r = cli
        .wait(&quick, Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    assert_eq!(r.state, JobState::Success);

    let long = cli.submit(job("hang")).await.unwrap().id;
    until_state(&engine, &long, JobState::Running, 20).await;
    match cli.cancel(&long).await.unwrap() {
        CancelOutcome::Cancelled(r) => assert_eq!(r.state, JobState::Cancelled),
        other => panic!("{other:?}"),
    }
    eventually(20, "the engine to destroy the VM", || async {
        engine.get(&long).unwrap().vm_destroyed.then_some(())
    })
    .await;
    assert_eq!(fake.alive(), 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_over_vms_are_destroyed_while_the_engine_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::new();
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(fake.clone())).await;
    let m = host.manager().clone();
    // A live job's VM stays; a VM naming an unknown job, and one naming a
    // finished job that never recorded it, go at the next cleanup pass.
    let live = m.submit(job("hang")).await.unwrap().id;
    until_state(&m, &live, JobState::Running, 20).await;
    let done = m.submit(job("run=10")).await.unwrap().id;
    until_state(&m, &done, JobState::Success, 20).await;
    fake.plant("orphan-1", "00000000-0000-4000-8000-000000000000");
    fake.plant("orphan-2", &done);
    eventually(20, "the left-over VMs to be destroyed", || async {
        (!fake.is_alive("orphan-1") && !fake.is_alive("orphan-2")).then_some(())
    })
    .await;
    let live_vm = m.get(&live).unwrap().vm.unwrap().id;
    assert!(fake.is_alive(&live_vm), "the running job's VM is kept");
    assert_eq!(m.get(&live).unwrap().state, JobState::Running);
    m.cancel(&live).await.unwrap();
    host.stop().await;
}
