//! The pool loop: keeps each class at its target, retires what must go,
//! and empties the pool at shutdown (unless it is kept for the next start).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::Pool;
use crate::clock::now_ms;
use crate::jobs::engine::Engine;
use crate::model::{PoolVm, PoolVmState};
use crate::pool::PoolClass;
use crate::provider::{IdleRequest, ProviderError, VmRef};

/// How often the loop looks without being woken.
const TICK: Duration = Duration::from_secs(1);
/// After a failed fill, the class waits this long, doubling per failure in
/// a row up to [`MAX_BACKOFF`], so a broken template is not cloned in a loop.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts the pool loop when pools are configured.
pub(in crate::jobs::engine) fn spawn(engine: &Engine) {
    let Some(pool) = engine.pool.clone() else {
        return;
    };
    let e = engine.clone();
    engine.tracker.spawn(async move { run(e, pool).await });
}

#[derive(Default)]
struct LoopState {
    /// Fills in flight; each ends with its class's index and outcome.
    fills: JoinSet<(usize, bool)>,
    /// Each fill task's class, to count a task that panicked.
    fill_class: HashMap<tokio::task::Id, usize>,
    /// Fills in flight per class.
    filling: HashMap<usize, usize>,
    /// Destroys in flight.
    retiring: JoinSet<String>,
    /// VM ids being destroyed.
    retiring_ids: HashSet<String>,
    /// Per class: failures in a row, and when to try again.
    backoff: HashMap<usize, (u32, Instant)>,
}

impl LoopState {
    fn fill_done(&mut self, class: usize, ok: bool) {
        if let Some(n) = self.filling.get_mut(&class) {
            *n = n.saturating_sub(1);
        }
        if ok {
            self.backoff.remove(&class);
        } else {
            let failures = self.backoff.get(&class).map_or(0, |(n, _)| *n) + 1;
            let wait = FIRST_BACKOFF
                .saturating_mul(1 << failures.min(10).saturating_sub(1))
                .min(MAX_BACKOFF);
            self.backoff
                .insert(class, (failures, Instant::now() + wait));
        }
    }
}

async fn run(engine: Engine, pool: Arc<Pool>) {
    let mut st = LoopState::default();
    loop {
        refresh_versions(&engine, &pool).await;
        if let Err(e) = tick(&engine, &pool, &mut st).await {
            tracing::error!(error = %e, "warm pool: cannot read its VMs");
        }
        tokio::select! {
            _ = engine.shutdown.cancelled() => break,
            _ = pool.wake.notified() => {}
            Some(done) = st.fills.join_next_with_id() => {
                let (id, ok) = match done {
                    Ok((id, (_, ok))) => (id, ok),
                    Err(e) => (e.id(), false),
                };
                if let Some(class) = st.fill_class.remove(&id) {
                    st.fill_done(class, ok);
                }
            }
            Some(done) = st.retiring.join_next() => {
                if let Ok(id) = done {
                    st.retiring_ids.remove(&id);
                }
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    // Fills are cancel-safe: what they created has a row, swept below.
    st.fills.shutdown().await;
    while st.retiring.join_next().await.is_some() {}
    sweep(&engine, &pool).await;
}

/// Reads the version of every pool's template that is due.
async fn refresh_versions(engine: &Engine, pool: &Pool) {
    let mut seen = HashSet::new();
    for class in &pool.classes {
        if !seen.insert(class.template.as_str()) || !pool.version_stale(&class.template) {
            continue;
        }
        match engine.provider.template_version(&class.template).await {
            Ok(v) => pool.set_version(&class.template, v),
            Err(e) => {
                pool.version_failed(&class.template);
                tracing::warn!(template = %class.template, error = %e, "warm pool: cannot read the template's version");
            }
        }
    }
}

/// Why a pooled VM must go, or `None` to keep it.
fn retire_reason(
    row: &PoolVm,
    class: Option<&PoolClass>,
    version: Option<&str>,
    max_age: Duration,
    now: i64,
) -> Option<&'static str> {
    let Some(_class) = class else {
        return Some("its class is no longer in DELEGATE_POOL");
    };
    if row.state != PoolVmState::Ready {
        return None;
    }
    if version.is_some_and(|v| v != row.template_version) {
        return Some("its template changed");
    }
    let ready_at = row.ready_at.unwrap_or(row.created_at);
    if now.saturating_sub(ready_at) > max_age.as_millis() as i64 {
        return Some("it was idle past DELEGATE_POOL_MAX_AGE");
    }
    None
}

async fn tick(
    engine: &Engine,
    pool: &Arc<Pool>,
    st: &mut LoopState,
) -> Result<(), crate::store::StoreError> {
    let rows = engine.store(|s| s.pool_list()).await?;
    let now = now_ms();
    let class_of = |key: &str| pool.classes.iter().find(|c| c.key() == key);
    for row in &rows {
        if row.state == PoolVmState::Claimed || st.retiring_ids.contains(&row.vm.id) {
            continue;
        }
        let class = class_of(&row.class);
        let version = class.and_then(|c| pool.version(&c.template));
        if let Some(reason) = retire_reason(row, class, version.as_deref(), pool.max_age, now) {
            tracing::info!(vm = %row.vm.id, class = %row.class, reason, "warm pool: replacing a VM");
            st.retiring_ids.insert(row.vm.id.clone());
            let (e, vm) = (engine.clone(), row.vm.clone());
            st.retiring.spawn(async move {
                destroy_pool_vm(&e, &vm).await;
                vm.id
            });
        }
    }
    let mut total_filling: usize = st.filling.values().sum();
    for (i, class) in pool.classes.iter().enumerate() {
        let key = class.key();
        let version = pool.version(&class.template);
        let live = rows.iter().filter(|r| {
            r.class == key && !st.retiring_ids.contains(&r.vm.id) && r.state != PoolVmState::Claimed
        });
        let ready: Vec<&PoolVm> = live
            .clone()
            .filter(|r| {
                r.state == PoolVmState::Ready
                    && version.as_deref().is_none_or(|v| v == r.template_version)
            })
            .collect();
        let filling = st.filling.get(&i).copied().unwrap_or(0);
        let starting = live
            .filter(|r| r.state == PoolVmState::Starting)
            .count()
            .max(filling);
        let oldest = ready
            .iter()
            .map(|r| now.saturating_sub(r.ready_at.unwrap_or(r.created_at)))
            .max()
            .unwrap_or(0);
        engine.shared.metrics.set_pool_sizes(
            &key,
            class.target as u64,
            ready.len() as u64,
            starting as u64,
            oldest as f64 / 1000.0,
        );
        if engine.shutdown.is_cancelled() {
            continue;
        }
        let Some(version) = version else { continue };
        if st
            .backoff
            .get(&i)
            .is_some_and(|(_, at)| Instant::now() < *at)
        {
            continue;
        }
        let deficit = class.target.saturating_sub(ready.len() + filling);
        let room = pool.max_fills.saturating_sub(total_filling);
        for _ in 0..deficit.min(room) {
            let (e, c, v) = (engine.clone(), class.clone(), version.clone());
            let task = st.fills.spawn(async move {
                let ok = match fill(&e, &c, v).await {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::warn!(class = %c.key(), error = %err, "warm pool: preparing a VM failed");
                        false
                    }
                };
                (i, ok)
            });
            st.fill_class.insert(task.id(), i);
            *st.filling.entry(i).or_insert(0) += 1;
            total_filling += 1;
        }
    }
    Ok(())
}

/// Makes one pool VM of `class` and marks it ready.
async fn fill(engine: &Engine, class: &PoolClass, version: String) -> Result<(), ProviderError> {
    let key = class.key();
    let pool_id = format!("pool-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let created: Arc<Mutex<Option<VmRef>>> = Arc::default();
    let (store, seen, k, v) = (
        engine.shared.store.clone(),
        created.clone(),
        key.clone(),
        version,
    );
    // The row is written before the provider goes on, so a crash right
    // after still finds the VM (the store's one inline write, as for jobs).
    let on_created = move |vm: VmRef| {
        if let Err(e) = store.pool_add(&vm, &k, &v, now_ms()) {
            tracing::error!(vm = %vm.id, error = %e, "warm pool: cannot record a new VM");
        }
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(vm);
    };
    let started = Instant::now();
    let req = IdleRequest {
        pool_id,
        class: key.clone(),
        template: class.template.clone(),
        size: class.size,
        callback_url: engine.shared.settings.callback_url.clone(),
        egress_url: engine
            .shared
            .settings
            .egress
            .listen
            .and(engine.shared.settings.egress.url.clone()),
    };
    match engine.provider.prepare_idle(req, &on_created).await {
        Ok(vm) => {
            let ready_vm = vm.clone();
            let ready = engine
                .store(move |s| s.pool_ready(&ready_vm, now_ms()))
                .await
                .unwrap_or(false);
            if !ready {
                // Forgotten meanwhile (reconciled away): not ours to offer.
                destroy_pool_vm(engine, &vm).await;
                return Ok(());
            }
            tracing::info!(vm = %vm.id, class = %key, seconds = started.elapsed().as_secs_f64(), "warm pool: VM ready");
            Ok(())
        }
        Err(e) => {
            let made = created.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(vm) = made {
                destroy_pool_vm(engine, &vm).await;
            }
            Err(e)
        }
    }
}

/// Destroys a pool VM and forgets its row. Returns whether it is gone; a
/// failure leaves the row for the next attempt.
pub(super) async fn destroy_pool_vm(engine: &Engine, vm: &VmRef) -> bool {
    match engine.provider.destroy(vm).await {
        Ok(()) => {
            engine.shared.metrics.count_destroyed();
            let gone = vm.clone();
            if let Err(e) = engine.store(move |s| s.pool_forget(&gone)).await {
                tracing::error!(vm = %vm.id, error = %e, "warm pool: cannot forget a destroyed VM");
            }
            true
        }
        Err(e) => {
            tracing::warn!(vm = %vm.id, error = %e, "warm pool: destroying a VM failed; retried later");
            false
        }
    }
}

/// At shutdown: half-made VMs always go; ready ones too unless
/// `DELEGATE_POOL_KEEP_ON_EXIT` keeps them for the next start, which adopts
/// them. Claimed VMs are their jobs'.
async fn sweep(engine: &Engine, pool: &Pool) {
    let rows = match engine.store(|s| s.pool_list()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "warm pool: cannot read its VMs at shutdown; the next start reconciles them");
            return;
        }
    };
    let mut kept = 0;
    let mut doomed: Vec<VmRef> = Vec::new();
    for row in &rows {
        match row.state {
            PoolVmState::Claimed => {}
            PoolVmState::Ready if pool.keep_on_exit => kept += 1,
            PoolVmState::Ready | PoolVmState::Starting => doomed.push(row.vm.clone()),
        }
    }
    // A fill stopped while its clone request was under way leaves a VM
    // without a row: the provider's list has it.
    match engine.provider.list_idle().await {
        Ok(listed) => doomed.extend(
            listed
                .into_iter()
                .filter(|idle| {
                    !rows
                        .iter()
                        .any(|r| r.vm.provider == idle.vm.provider && r.vm.id == idle.vm.id)
                })
                .map(|idle| idle.vm),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "warm pool: cannot list pool VMs at shutdown; the next start reconciles them");
        }
    }
    // All at once: each destroy is a stop and a delete on the cluster.
    let mut destroys = JoinSet::new();
    for vm in doomed {
        let e = engine.clone();
        destroys.spawn(async move { destroy_pool_vm(&e, &vm).await });
    }
    while destroys.join_next().await.is_some() {}
    if kept > 0 {
        tracing::info!(
            kept,
            "warm pool: idle VMs kept for the next start (DELEGATE_POOL_KEEP_ON_EXIT)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::parse_pool;

    fn row(state: PoolVmState, version: &str, ready_at: Option<i64>) -> PoolVm {
        PoolVm {
            vm: VmRef {
                provider: "proxmox".into(),
                id: "100".into(),
                node: None,
            },
            class: "t:2c4g20g".into(),
            template_version: version.into(),
            state,
            job_id: None,
            created_at: 0,
            ready_at,
        }
    }

    #[test]
    fn retires_by_class_version_and_age() {
        let classes = parse_pool("t:2c4g20g=2").unwrap();
        let c = Some(&classes[0]);
        let hour = Duration::from_secs(3600);
        let now = 1_000_000;
        use PoolVmState::*;
        assert_eq!(
            retire_reason(&row(Ready, "v1", Some(now)), c, Some("v1"), hour, now),
            None
        );
        assert!(retire_reason(&row(Ready, "v1", Some(now)), None, Some("v1"), hour, now).is_some());
        assert_eq!(
            retire_reason(&row(Ready, "v1", Some(now)), c, Some("v2"), hour, now),
            Some("its template changed")
        );
        assert_eq!(
            retire_reason(&row(Ready, "v1", Some(now)), c, None, hour, now),
            None
        );
        let old = now - hour.as_millis() as i64 - 1;
        assert!(
            retire_reason(&row(Ready, "v1", Some(old)), c, Some("v1"), hour, now)
                .is_some_and(|r| r.contains("MAX_AGE"))
        );
        // A VM still starting is judged once ready.
        assert_eq!(
            retire_reason(&row(Starting, "v0", None), c, Some("v1"), hour, now),
            None
        );
    }
}
