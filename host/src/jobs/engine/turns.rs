//! The engine's side of follow-up turns (see `jobs::session`). A turn has
//! no VM of its own: its driver "provisions" it by marking it ready for the
//! guest waiting in the session's kept VM, then watches its deadline and
//! lease like any job's. The kept VM belongs to the session's first job,
//! and only that job's driver destroys it: when a turn's end ends the
//! session (a cancel, a lost guest), or when housekeeping finds the VM
//! released or idle past `DELEGATE_PERSISTENT_TTL`.

use super::Engine;
use super::driver::{self, Resume};
use crate::clock::now_ms;
use crate::jobs::change::JobChangeKind;
use crate::jobs::session;
use crate::store::StoreError;

/// Readies turn `id` for its session's guest, which fetches it with its
/// next `GET turns/next`. Idempotent (a restart may attach again).
pub(super) async fn attach(engine: &Engine, id: &str, session_id: &str) {
    // The turn runs in the session's VM: what its status warns of holds
    // for the turn too.
    let warnings = match engine.job(session_id).await {
        Ok(first) => first.warnings,
        Err(e) => {
            tracing::warn!(job_id = id, session = session_id, error = %e, "cannot read the session's first job");
            Vec::new()
        }
    };
    let jid = id.to_string();
    if let Err(e) = engine
        .store(move |s| {
            s.set_warnings(&jid, &warnings)?;
            s.mark_provisioned(&jid, now_ms())
        })
        .await
    {
        tracing::error!(job_id = id, error = %e, "cannot mark the turn ready");
        return;
    }
    tracing::info!(
        job_id = id,
        session = session_id,
        "turn handed to the kept VM"
    );
    // The guest's wait listens for notices about its session.
    engine.shared.notify(session_id, JobChangeKind::State);
}

/// After a turn is final: a cancel or a lost guest ends the session's VM
/// (released now, destroyed by the first job's driver).
pub(super) async fn after_turn(engine: &Engine, id: &str, session_id: &str) {
    let Ok(rec) = engine.job(id).await else {
        return;
    };
    if session::ends_session(&rec) {
        let sid = session_id.to_string();
        match engine
            .store(move |s| s.release_session(&sid, now_ms()))
            .await
        {
            Ok(()) => {
                tracing::info!(
                    job_id = id,
                    session = session_id,
                    "the turn ended its session"
                );
                driver::launch(engine, session_id, Resume::Cleanup);
            }
            Err(e) => tracing::error!(job_id = id, error = %e, "cannot release the session"),
        }
    }
    engine.shared.notify(session_id, JobChangeKind::State);
}

/// Whether the session whose first job is `id` still keeps its VM.
pub(super) async fn still_kept(engine: &Engine, id: &str) -> bool {
    let sid = id.to_string();
    match engine.store(move |s| s.session_jobs(&sid)).await {
        Ok(jobs) => session::keep(&jobs, engine.shared.settings.persistent_ttl, now_ms()).kept(),
        Err(e) => {
            // Keep it: housekeeping asks again, and a VM destroyed by
            // mistake cannot come back.
            tracing::warn!(job_id = id, error = %e, "cannot read the session; VM kept for now");
            true
        }
    }
}

/// Housekeeping: the kept VMs released or idle past their time-to-live get
/// their first job's driver to destroy them. Blocking (inside
/// [`Engine::store`]).
pub(super) fn end_due(engine: &Engine) -> Result<(), StoreError> {
    let ttl = engine.shared.settings.persistent_ttl.as_millis() as i64;
    for id in engine
        .shared
        .store
        .kept_vms_due(now_ms().saturating_sub(ttl))?
    {
        if driver::launch(engine, &id, Resume::Cleanup) {
            tracing::info!(job_id = %id, "kept VM released or idle past DELEGATE_PERSISTENT_TTL");
        }
    }
    Ok(())
}
