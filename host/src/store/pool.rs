//! Warm pools' rows: one per pool VM, from the moment its clone exists
//! until it is destroyed. The claim is the one decision that must never
//! happen twice for a VM, so it is a single write transaction that both
//! moves the row from `ready` to `claimed` (with the job's id, unique) and
//! records the VM as the job's, before any bootstrap leaves the host: after
//! a crash at any point, a claimed VM is its job's (and destroyed with it),
//! never offered again.

use rusqlite::{OptionalExtension, params};

use super::row::enum_text;
use super::{Store, StoreError};
use crate::model::{PoolVm, PoolVmState, UnixMs};
use crate::provider::{Isolation, VmRef};

const POOL_COLUMNS: &str = "vm_provider, vm_id, vm_node, class, template_ver, state, job_id, \
                            created_at, ready_at";

fn pool_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PoolVm> {
    let state: String = r.get(5)?;
    Ok(PoolVm {
        vm: VmRef {
            provider: r.get(0)?,
            id: r.get(1)?,
            node: r.get(2)?,
        },
        class: r.get(3)?,
        template_version: r.get(4)?,
        state: match state.as_str() {
            "ready" => PoolVmState::Ready,
            "claimed" => PoolVmState::Claimed,
            _ => PoolVmState::Starting,
        },
        job_id: r.get(6)?,
        created_at: r.get(7)?,
        ready_at: r.get(8)?,
    })
}

impl Store {
    /// Records a pool VM whose clone now exists, as `starting`. A row left
    /// under the same id (the provider reused the id of a VM gone without
    /// our knowing) is replaced: that VM, and any claim on it, is gone.
    pub fn pool_add(
        &self,
        vm: &VmRef,
        class: &str,
        template_version: &str,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO pool_vms (vm_provider, vm_id, vm_node, class, \
                 template_ver, state, job_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'starting', NULL, ?6)",
                params![vm.provider, vm.id, vm.node, class, template_version, now],
            )
            .map_err(|e| self.sqlite(e))
        })?;
        Ok(())
    }

    /// A starting pool VM's guest now waits for its bootstrap. Returns
    /// whether the row was still `starting` (not forgotten meanwhile).
    pub fn pool_ready(&self, vm: &VmRef, now: UnixMs) -> Result<bool, StoreError> {
        let n = self.write(|tx| {
            tx.execute(
                "UPDATE pool_vms SET state = 'ready', ready_at = ?3, vm_node = \
                 COALESCE(?4, vm_node) WHERE vm_provider = ?1 AND vm_id = ?2 \
                 AND state = 'starting'",
                params![vm.provider, vm.id, now, vm.node],
            )
            .map_err(|e| self.sqlite(e))
        })?;
        Ok(n == 1)
    }

    /// Claims the oldest ready VM of `class` built from `template_version`
    /// for job `job_id`, in one transaction: the row becomes `claimed` by the
    /// job, and the job records the VM. Nothing is claimed (`None`) when no
    /// VM is ready, or when the job is no longer provisioning or already
    /// has a VM (a cancel won, or a claim already happened).
    pub fn pool_claim(
        &self,
        job_id: &str,
        class: &str,
        template_version: &str,
        isolation: Isolation,
        now: UnixMs,
    ) -> Result<Option<VmRef>, StoreError> {
        self.write(|tx| {
            let job_free: Option<bool> = tx
                .query_row(
                    "SELECT state = 'provisioning' AND vm_id IS NULL FROM jobs WHERE id = ?1",
                    [job_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.sqlite(e))?;
            if job_free != Some(true) {
                return Ok(None);
            }
            let vm: Option<VmRef> = tx
                .query_row(
                    "SELECT vm_provider, vm_id, vm_node FROM pool_vms WHERE class = ?1 \
                     AND template_ver = ?2 AND state = 'ready' ORDER BY ready_at, vm_id LIMIT 1",
                    params![class, template_version],
                    |r| {
                        Ok(VmRef {
                            provider: r.get(0)?,
                            id: r.get(1)?,
                            node: r.get(2)?,
                        })
                    },
                )
                .optional()
                .map_err(|e| self.sqlite(e))?;
            let Some(vm) = vm else { return Ok(None) };
            let claimed = tx
                .execute(
                    "UPDATE pool_vms SET state = 'claimed', job_id = ?3, claimed_at = ?4 \
                     WHERE vm_provider = ?1 AND vm_id = ?2 AND state = 'ready'",
                    params![vm.provider, vm.id, job_id, now],
                )
                .map_err(|e| self.sqlite(e))?;
            if claimed != 1 {
                return Ok(None);
            }
            tx.execute(
                "UPDATE jobs SET vm_provider = ?2, vm_id = ?3, vm_node = ?4, isolation = ?5, \
                 vm_destroyed = 0 WHERE id = ?1",
                params![job_id, vm.provider, vm.id, vm.node, enum_text(&isolation)],
            )
            .map_err(|e| self.sqlite(e))?;
            Ok(Some(vm))
        })
    }

    /// Forgets a pool VM (it was destroyed, or found gone). A VM that is
    /// not a pool VM is no error.
    pub fn pool_forget(&self, vm: &VmRef) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM pool_vms WHERE vm_provider = ?1 AND vm_id = ?2",
                params![vm.provider, vm.id],
            )
            .map_err(|e| self.sqlite(e))
        })?;
        Ok(())
    }

    /// Every pool VM on record, oldest first.
    pub fn pool_list(&self) -> Result<Vec<PoolVm>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {POOL_COLUMNS} FROM pool_vms ORDER BY created_at, vm_id"
                ))
                .map_err(|e| self.sqlite(e))?;
            stmt.query_map([], pool_row)
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))
        })
    }

    /// Records how the job's VM started: warm (from a pool) or cold, and
    /// how long it took.
    pub fn set_vm_start(&self, job_id: &str, warm: bool, ms: u64) -> Result<(), StoreError> {
        self.update(
            job_id,
            "UPDATE jobs SET start_kind = ?2, start_ms = ?3 WHERE id = ?1",
            params![job_id, if warm { "warm" } else { "cold" }, ms as i64],
        )
    }
}
