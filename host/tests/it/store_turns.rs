//! The store's primitives for follow-up turns: a turn takes its session's
//! token hash and a number no other turn has, a session reads first turn
//! first, the kept VMs due to end are those released or idle, with no live
//! turn, and retention keeps the turns of a session whose VM is kept.

use delegate_host::jobs::rules;
use delegate_host::provider::{Isolation, VmRef};
use delegate_host::store::{NewJob, NewTurn, Store, StoreError};
use delegate_proto::{JobManifest, JobState};

fn persistent(task: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": task, "agentType": "script", "lifecycle": "persistent"
    }))
    .unwrap()
}

/// A persistent first job that ran and ended at `ended`, its VM recorded.
fn kept_job(store: &Store, id: &str, ended: i64) {
    store
        .insert_job(&NewJob {
            id: id.into(),
            manifest: persistent("first"),
            token_hash: [9; 32],
            created_at: 1,
            deadline_at: 60_000,
            isolation: Isolation::ProcessSandbox,
        })
        .unwrap();
    let vm = VmRef {
        provider: "local".into(),
        id: format!("vm-{id}"),
        node: None,
    };
    store.set_vm(id, &vm, Isolation::ProcessSandbox).unwrap();
    rules::transition(store, id, JobState::Failed, None, ended).unwrap();
}

fn turn(store: &Store, session: &str, id: &str, n: u32) -> Result<(), StoreError> {
    store
        .insert_turn(&NewTurn {
            id: id.into(),
            session_id: session.into(),
            turn: n,
            manifest: persistent(&format!("turn {n}")),
            created_at: 2,
            deadline_at: 60_000,
        })
        .map(|_| ())
}

#[test]
fn turns_share_the_session_token_and_take_unique_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    kept_job(&store, "s", 10);
    turn(&store, "s", "t2", 2).unwrap();
    let rec = store.get_job("t2").unwrap();
    assert_eq!((rec.session_id.as_deref(), rec.turn), (Some("s"), 2));
    assert_eq!(rec.state, JobState::Pending);
    assert_eq!(store.auth_view("t2").unwrap().token_hash, [9; 32]);
    match turn(&store, "s", "other", 2) {
        Err(StoreError::TurnTaken { session_id, turn }) => {
            assert_eq!((session_id.as_str(), turn), ("s", 2))
        }
        other => panic!("a second turn 2 was not refused: {other:?}"),
    }
    // Only a first job names a session.
    assert!(matches!(
        turn(&store, "t2", "t3", 3),
        Err(StoreError::NotFound(_))
    ));
    let ids: Vec<_> = store
        .session_jobs("s")
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.turn))
        .collect();
    assert_eq!(ids, [("s".to_string(), 1), ("t2".to_string(), 2)]);
}

#[test]
fn kept_vms_are_due_when_released_or_idle_and_no_turn_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    kept_job(&store, "idle", 100);
    kept_job(&store, "fresh", 900);
    kept_job(&store, "busy", 100);
    kept_job(&store, "released", 900);
    turn(&store, "busy", "busy-2", 2).unwrap();
    store.release_session("released", 950).unwrap();
    let mut due = store.kept_vms_due(500).unwrap();
    due.sort();
    assert_eq!(due, ["idle", "released"]);
    // A turn's end counts as the session's last activity.
    rules::transition(&store, "busy-2", JobState::Cancelled, None, 800).unwrap();
    assert!(
        !store
            .kept_vms_due(500)
            .unwrap()
            .contains(&"busy".to_string())
    );
    assert!(
        store
            .kept_vms_due(800)
            .unwrap()
            .contains(&"busy".to_string())
    );
    // Destroyed: nothing left to end.
    store.mark_vm_destroyed("idle").unwrap();
    assert!(
        !store
            .kept_vms_due(500)
            .unwrap()
            .contains(&"idle".to_string())
    );
}

#[test]
fn retention_keeps_the_turns_of_a_kept_vm() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    kept_job(&store, "s", 10);
    turn(&store, "s", "t2", 2).unwrap();
    rules::transition(&store, "t2", JobState::Failed, None, 20).unwrap();
    assert!(store.prune_finished(1000).unwrap().is_empty());
    store.mark_vm_destroyed("s").unwrap();
    let mut pruned = store.prune_finished(1000).unwrap();
    pruned.sort();
    assert_eq!(pruned, ["s", "t2"]);
}
