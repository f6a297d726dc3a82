//! The provider's pool VMs against the store's pool rows, beside the job
//! VMs' pass (`engine/reconcile.rs`) and with its decision for claimed
//! VMs: a claimed VM is its job's and judged like any job VM.
//!
//! At start no fill runs: a VM without a row (its clone outlived the row,
//! or the data directory is new) and a VM still `starting` (its fill died
//! with the last process) are destroyed; a `ready` VM is adopted (kept at
//! shutdown by `DELEGATE_POOL_KEEP_ON_EXIT`, or left by a crash), and the
//! pool loop then checks its template and age. While the engine runs, a
//! fill may hold a VM whose row is not written yet, so a VM without a row is
//! destroyed only once it is older than [`UNRECORDED_GRACE`]. Rows whose
//! VM is gone are forgotten, except a claim of a live job (its driver
//! destroys and forgets it).

use std::time::Duration;

use super::fill::destroy_pool_vm;
use crate::clock::now_ms;
use crate::jobs::engine::Engine;
use crate::jobs::engine::reconcile::{Pass, verdict};
use crate::model::{JobRecord, PoolVm, PoolVmState, UnixMs};
use crate::provider::{IdleVm, OwnedVm};
use crate::store::StoreError;

/// How old a pool VM without a row must be before a periodic pass takes it
/// for an orphan (its fill records it right after the clone call returns).
pub const UNRECORDED_GRACE: Duration = Duration::from_secs(600);

/// What to do with a pool VM the provider lists.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Keep,
    Destroy(&'static str),
}

/// Decides for one listed VM. `row` is its row; `job` the record of the job
/// that claimed it, if any and known.
pub(super) fn decide(
    idle: &IdleVm,
    row: Option<&PoolVm>,
    job: Option<&JobRecord>,
    now: UnixMs,
    pass: Pass,
) -> Decision {
    let Some(row) = row else {
        // Unknown age (its config could not be read): judged at the next
        // start, when no fill can be holding it.
        let young = idle
            .created_ms
            .is_none_or(|c| now.saturating_sub(c) < UNRECORDED_GRACE.as_millis() as i64);
        return if pass == Pass::Periodic && young {
            Decision::Keep
        } else {
            Decision::Destroy("no pool record")
        };
    };
    match row.state {
        PoolVmState::Ready => Decision::Keep,
        PoolVmState::Starting if pass == Pass::Start => {
            Decision::Destroy("interrupted while starting")
        }
        PoolVmState::Starting => Decision::Keep,
        PoolVmState::Claimed => {
            let owned = OwnedVm {
                vm: idle.vm.clone(),
                job_id: row.job_id.clone(),
                deadline_ms: None,
            };
            match verdict(&owned, job, now, pass) {
                Some(reason) => Decision::Destroy(reason),
                None => Decision::Keep,
            }
        }
    }
}

/// One pass. Provider errors are logged (the next pass tries again); store
/// errors are returned.
pub(in crate::jobs::engine) async fn reconcile(
    engine: &Engine,
    pass: Pass,
) -> Result<(), StoreError> {
    if !engine.provider.supports_pool() {
        return Ok(());
    }
    // Rows first: every row's VM then existed before the listing began, so
    // a ready row the listing lacks is a VM that is gone, not one made
    // while the provider was being listed.
    let rows = engine.store(|s| s.pool_list()).await?;
    let listed = match engine.provider.list_idle().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the provider's pool VMs; the next pass tries again");
            return Ok(());
        }
    };
    let now = now_ms();
    let same = |a: &crate::provider::VmRef, b: &crate::provider::VmRef| {
        a.provider == b.provider && a.id == b.id
    };
    for idle in &listed {
        let row = rows.iter().find(|r| same(&r.vm, &idle.vm));
        let job = match row.and_then(|r| r.job_id.clone()) {
            Some(id) => match engine.job(&id).await {
                Ok(r) => Some(r),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        match decide(idle, row, job.as_ref(), now, pass) {
            Decision::Keep => {
                if pass == Pass::Start && row.is_some_and(|r| r.state == PoolVmState::Ready) {
                    tracing::info!(vm = %idle.vm.id, class = ?idle.class, "warm pool: adopted an idle VM");
                }
            }
            Decision::Destroy(reason) => {
                tracing::info!(vm = %idle.vm.id, class = ?idle.class, reason, "destroying a pool VM");
                destroy_pool_vm(engine, &idle.vm).await;
            }
        }
    }
    // Rows whose VM the provider no longer has.
    for row in rows
        .iter()
        .filter(|r| !listed.iter().any(|l| same(&l.vm, &r.vm)))
    {
        let forget = match row.state {
            // A fill in flight may not be listed yet; at start none is.
            PoolVmState::Starting => pass == Pass::Start,
            PoolVmState::Ready => true,
            PoolVmState::Claimed => match &row.job_id {
                Some(id) => match engine.job(id).await {
                    Ok(job) => job.state.is_final() || pass == Pass::Start && job.vm.is_none(),
                    Err(StoreError::NotFound(_)) => true,
                    Err(e) => return Err(e),
                },
                None => true,
            },
        };
        if forget {
            tracing::info!(vm = %row.vm.id, state = row.state.as_str(), "warm pool: forgetting a VM that is gone");
            let vm = row.vm.clone();
            engine.store(move |s| s.pool_forget(&vm)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::VmRef;

    fn idle(created_ms: Option<i64>) -> IdleVm {
        IdleVm {
            vm: VmRef {
                provider: "proxmox".into(),
                id: "100".into(),
                node: Some("pve1".into()),
            },
            class: Some("t:2c4g20g".into()),
            created_ms,
        }
    }

    fn row(state: PoolVmState, job: Option<&str>) -> PoolVm {
        PoolVm {
            vm: idle(None).vm,
            class: "t:2c4g20g".into(),
            template_version: "v".into(),
            state,
            job_id: job.map(str::to_string),
            created_at: 0,
            ready_at: None,
        }
    }

    #[test]
    fn decides_by_row_and_pass() {
        use Decision::*;
        use Pass::*;
        use PoolVmState::*;
        let now = 10_000_000;
        let young = Some(now - 1000);
        assert_eq!(decide(&idle(young), None, None, now, Periodic), Keep);
        assert!(matches!(
            decide(&idle(young), None, None, now, Start),
            Destroy(_)
        ));
        assert!(matches!(
            decide(&idle(Some(0)), None, None, now, Periodic),
            Destroy(_)
        ));
        // Of unknown age: left to the next start.
        assert_eq!(decide(&idle(None), None, None, now, Periodic), Keep);
        assert!(matches!(
            decide(&idle(None), None, None, now, Start),
            Destroy(_)
        ));
        assert_eq!(
            decide(&idle(young), Some(&row(Ready, None)), None, now, Start),
            Keep
        );
        assert_eq!(
            decide(
                &idle(young),
                Some(&row(Starting, None)),
                None,
                now,
                Periodic
            ),
            Keep
        );
        assert!(matches!(
            decide(&idle(young), Some(&row(Starting, None)), None, now, Start),
            Destroy("interrupted while starting")
        ));
        // A claim of a job the store does not know is nobody's.
        assert!(matches!(
            decide(
                &idle(young),
                Some(&row(Claimed, Some("j"))),
                None,
                now,
                Periodic
            ),
            Destroy(_)
        ));
    }
}
