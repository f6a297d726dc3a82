//! The engine: what runs jobs, in the one process that holds `host.lock`.
//! The scheduler (`scheduler`), one driver per live job (`driver`),
//! a lost VM noticed through its provider (`gone`), recovery after a
//! restart (`recovery`), the provider's VMs against the store (`reconcile`),
//! warm pools (`pool`) and follow-up turns in kept VMs (`turns`), all over
//! one [`Engine`] value that always has its
//! provider and its tasks. The manager facade holds it when there is one;
//! nothing here knows the facade.

mod driver;
mod gone;
mod pool;
mod reconcile;
mod recovery;
mod scheduler;
mod turns;

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::JobError;
use super::state::Shared;
use crate::model::JobRecord;
use crate::provider::Provider;
use crate::store::{HostLock, Store, StoreError};

/// The running engine. Cheap to clone.
#[derive(Clone)]
pub(super) struct Engine {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) provider: Arc<dyn Provider>,
    /// The warm pools, when configured and the provider keeps idle VMs.
    pool: Option<Arc<pool::Pool>>,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    lock: Mutex<Option<HostLock>>,
}

impl Deref for Engine {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Engine {
    /// Recovers after a restart (reconciles provider VMs, resumes drivers)
    /// and spawns the scheduler and housekeeping, all stopped by
    /// `shutdown`. `lock` is held until [`Engine::join`] returns.
    pub(super) async fn start(
        shared: Arc<Shared>,
        provider: Arc<dyn Provider>,
        lock: HostLock,
        shutdown: CancellationToken,
    ) -> Result<Engine, JobError> {
        let pool = pool::Pool::from_settings(&shared.settings).map(Arc::new);
        if pool.is_some() && !provider.supports_pool() {
            tracing::warn!(
                provider = provider.name(),
                "DELEGATE_POOL is set but this provider keeps no warm pool; every job starts cold"
            );
        }
        let pool = pool.filter(|_| provider.supports_pool());
        let engine = Engine {
            inner: Arc::new(Inner {
                shared,
                provider,
                pool,
                shutdown,
                tracker: TaskTracker::new(),
                lock: Mutex::new(Some(lock)),
            }),
        };
        recovery::recover(&engine).await?;
        scheduler::spawn(&engine);
        pool::spawn(&engine);
        Ok(engine)
    }

    /// Runs `f` on the store off the runtime threads ([`Store::run`]).
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.shared.store.run(f).await
    }

    /// The job's record.
    async fn job(&self, id: &str) -> Result<JobRecord, StoreError> {
        let id = id.to_string();
        self.store(move |s| s.get_job(&id)).await
    }

    /// Waits until the engine's tasks have ended (after its shutdown token
    /// was cancelled), then releases `host.lock`.
    pub(super) async fn join(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
