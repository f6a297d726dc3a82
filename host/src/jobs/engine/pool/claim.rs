//! A job takes a ready pool VM: first the claim, one store transaction
//! that marks the VM claimed by the job and records it as the job's VM;
//! only then the bootstrap. A crash after the claim leaves a job in
//! `provisioning` with a recorded VM that never got its bootstrap (or got
//! it without the job having noticed): recovery destroys that VM and
//! provisions the job afresh, as for any interrupted provisioning. The VM
//! never returns to the pool, so no two jobs ever share it.

use super::Pool;
use super::fill::destroy_pool_vm;
use crate::clock::now_ms;
use crate::jobs::engine::Engine;
use crate::provider::{ProvisionRequest, VmRef};

/// What a claim came to.
pub(in crate::jobs::engine) enum Claim {
    /// The job fits no pool.
    NoClass,
    /// It fits one, but no VM was ready (or delivering failed): cold start.
    Miss,
    /// The VM is the job's and its guest has the bootstrap.
    Hit(VmRef),
}

/// Tries to start the job `req` asks a VM for in a pool VM.
pub(in crate::jobs::engine) async fn claim(
    engine: &Engine,
    pool: &Pool,
    req: &ProvisionRequest,
) -> Claim {
    let job_id = req.job_id.as_str();
    let template = engine.provider.pool_template(req.template.as_deref());
    let Some(class) = pool.class_for(template.as_deref(), req.size) else {
        return Claim::NoClass;
    };
    let key = class.key();
    let metrics = &engine.shared.metrics;
    // Known unless the pool loop has not read it yet (just after a start,
    // when adopted VMs may already be ready): then read it here.
    let version = match pool.version(&class.template) {
        Some(v) => v,
        None => match engine.provider.template_version(&class.template).await {
            Ok(v) => {
                pool.set_version(&class.template, v.clone());
                v
            }
            Err(e) => {
                tracing::warn!(job_id, template = %class.template, error = %e, "warm pool: cannot read the template's version; starting cold");
                metrics.count_pool_claim(&key, false);
                return Claim::Miss;
            }
        },
    };
    let isolation = engine.provider.isolation();
    let (jid, k) = (job_id.to_string(), key.clone());
    let claimed = engine
        .store(move |s| s.pool_claim(&jid, &k, &version, isolation, now_ms()))
        .await;
    // Whatever happened, the pool is one short or was empty: refill.
    pool.wake.notify_one();
    let vm = match claimed {
        Ok(Some(vm)) => vm,
        Ok(None) => {
            metrics.count_pool_claim(&key, false);
            return Claim::Miss;
        }
        Err(e) => {
            tracing::error!(job_id, error = %e, "warm pool: claim failed; starting cold");
            metrics.count_pool_claim(&key, false);
            return Claim::Miss;
        }
    };
    tracing::info!(job_id, vm = %vm.id, class = %key, "warm pool: VM claimed");
    let delivered = engine
        .provider
        .deliver_bootstrap(&vm, &req.bootstrap, req.egress_url.as_deref())
        .await;
    match delivered {
        Ok(()) => {
            metrics.count_pool_claim(&key, true);
            Claim::Hit(vm)
        }
        Err(e) => {
            // The VM may be broken (its agent gone): destroy it and start
            // cold. The job forgets it only once it is gone.
            tracing::warn!(job_id, vm = %vm.id, error = %e, "warm pool: delivering the bootstrap failed; starting cold");
            metrics.count_pool_claim(&key, false);
            if destroy_pool_vm(engine, &vm).await {
                let jid = job_id.to_string();
                if let Err(e) = engine.store(move |s| s.clear_vm(&jid)).await {
                    tracing::error!(job_id, error = %e, "cannot clear the failed pool VM");
                }
            }
            // A VM not destroyed stays claimed by the job: reconciliation
            // destroys it once the job no longer records it or is final.
            Claim::Miss
        }
    }
}
