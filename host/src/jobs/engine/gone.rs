//! A lost VM noticed at once: while a job runs, its driver asks the
//! provider every [`Provider::gone_interval`] whether the VM has ended on
//! its own (the sandbox or QEMU exited, a Proxmox VM stopped or was
//! deleted), and fails the job with the provider's reason as soon as it
//! has. Without this a dead VM cost the whole heartbeat lease.
//!
//! A guest that posted its result and then exited is not lost:
//! [`rules::vm_gone`] leaves a job that has its result alone, and a guest
//! always has its answer before it exits.
//!
//! [`Provider::gone_interval`]: crate::provider::Provider::gone_interval

use std::time::Duration;

use delegate_proto::JobState;

use super::Engine;
use crate::clock::now_ms;
use crate::jobs::full::RECORD_RETRY;
use crate::jobs::rules;
use crate::provider::VmRef;
use crate::store::StoreError;

/// How long a gone VM's job waits for a result already on its way (a
/// guest's last request still in a relay or a proxy) before it is failed.
const SETTLE: Duration = Duration::from_secs(1);

/// Resolves with the provider's reason once `vm` is gone; never, when the
/// provider cannot tell or there is no VM. An error asking is logged and
/// asked again next time: the heartbeat lease still covers the job.
pub(super) async fn gone(engine: &Engine, id: &str, vm: Option<VmRef>) -> String {
    let (Some(vm), Some(every)) = (vm, engine.provider.gone_interval()) else {
        return std::future::pending().await;
    };
    let mut warned = false;
    loop {
        tokio::time::sleep(every).await;
        match engine.provider.gone(&vm).await {
            Ok(Some(reason)) => return reason,
            Ok(None) => {}
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(job_id = id, vm = %vm.id, error = %e, "cannot tell whether the VM is still there");
            }
            Err(_) => {}
        }
    }
}

/// Fails the job because its VM is gone ([`rules::vm_gone`]), after the
/// settle time, retrying while the store fails. Returns whether the job's
/// state is settled (failed now, or final or with its result already);
/// false only when the store kept failing.
pub(super) async fn fail(engine: &Engine, id: &str, reason: &str) -> bool {
    tokio::time::sleep(SETTLE).await;
    tracing::warn!(job_id = id, %reason, "the job's VM is gone");
    let shared = &engine.shared;
    let recorded = RECORD_RETRY
        .run(
            "recording a gone VM",
            |_: &StoreError| true,
            || async {
                let (s, jid, why) = (shared.clone(), id.to_string(), reason.to_string());
                let out = shared
                    .store
                    .run(move |store| {
                        if !rules::vm_gone(store, &jid, &why, now_ms())? {
                            return Ok(false);
                        }
                        let rec = store.get_job(&jid)?;
                        s.on_final(&rec, Some(&why));
                        Ok(true)
                    })
                    .await;
                if let Err(e) = &out {
                    shared.on_store_error(e);
                }
                out
            },
        )
        .await;
    match recorded {
        Ok(failed) => {
            if !failed {
                tracing::info!(job_id = id, "the VM ended after its job had its result");
            }
            true
        }
        Err(e) => {
            tracing::error!(job_id = id, error = %e, state = %JobState::Failed, "cannot record the job's end");
            false
        }
    }
}
