//! Warm pools: idle VMs kept booted per class (`DELEGATE_POOL`), so a job
//! whose template and size match one starts in the time a bootstrap takes
//! to deliver instead of a clone, a boot and a guest agent.
//!
//! - `fill`: one loop keeps each class at its target (VMs being filled at
//!   once bounded by `DELEGATE_MAX_PROVISIONING`, and clones by the
//!   provider's own caps), retires VMs idle past `DELEGATE_POOL_MAX_AGE`,
//!   of a changed template or of a class no longer configured, and at
//!   shutdown destroys the idle VMs unless `DELEGATE_POOL_KEEP_ON_EXIT`.
//! - `claim`: a job's driver takes a ready VM through one store
//!   transaction, then delivers the bootstrap.
//! - `reconcile`: the provider's pool VMs against the store's rows, at
//!   start (adopting ready VMs, destroying half-made ones) and periodically.
//!
//! Every pool VM has a row from the moment its clone exists (written
//! inline by `on_created`, as a job's VM is) until it is destroyed; a VM
//! is claimed at most once and never returns to the pool.

mod claim;
mod fill;
mod reconcile;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::Settings;
use crate::pool::PoolClass;

pub(super) use claim::{Claim, claim};
pub(super) use fill::spawn;
pub(super) use reconcile::reconcile;

/// How long a template's version is trusted before it is read again.
const VERSION_TTL: Duration = Duration::from_secs(30);

/// The pools' configuration and what the loop and the claims share.
pub(super) struct Pool {
    pub(super) classes: Vec<PoolClass>,
    pub(super) max_age: Duration,
    pub(super) keep_on_exit: bool,
    /// At most this many VMs are filled at once.
    pub(super) max_fills: usize,
    /// How long a template's version is trusted.
    version_ttl: Duration,
    /// Template → its version (once read), and when it was last tried.
    versions: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Wakes the fill loop (a claim took a VM).
    pub(super) wake: Notify,
}

impl Pool {
    /// The pools `settings` ask for; `None` when there are none.
    pub(super) fn from_settings(settings: &Settings) -> Option<Pool> {
        if settings.pool.is_empty() {
            return None;
        }
        Some(Pool {
            classes: settings.pool.clone(),
            max_age: settings.pool_max_age,
            keep_on_exit: settings.pool_keep_on_exit,
            max_fills: settings.max_provisioning,
            version_ttl: VERSION_TTL.min(settings.cleanup_interval),
            versions: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    /// The class a job of `template` and `size` may take VMs from.
    pub(super) fn class_for(
        &self,
        template: Option<&str>,
        size: crate::provider::VmSize,
    ) -> Option<&PoolClass> {
        self.classes.iter().find(|c| c.fits(template, size))
    }

    /// The template's version as last read, however old.
    pub(super) fn version(&self, template: &str) -> Option<String> {
        self.versions_lock()
            .get(template)
            .and_then(|(v, _)| v.clone())
    }

    /// Whether the template's version should be read again.
    fn version_stale(&self, template: &str) -> bool {
        self.versions_lock()
            .get(template)
            .is_none_or(|(_, at)| at.elapsed() >= self.version_ttl)
    }

    /// A failed read: tried again after the TTL, the last version kept.
    fn version_failed(&self, template: &str) {
        let mut versions = self.versions_lock();
        let old = versions.remove(template).and_then(|(v, _)| v);
        versions.insert(template.to_string(), (old, Instant::now()));
    }

    pub(super) fn set_version(&self, template: &str, version: String) {
        let mut versions = self.versions_lock();
        if let Some((Some(old), _)) = versions.get(template)
            && *old != version
        {
            tracing::info!(
                template,
                old = %old,
                new = %version,
                "template changed: pooled VMs of the old one are replaced"
            );
        }
        versions.insert(template.to_string(), (Some(version), Instant::now()));
    }

    fn versions_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Instant)>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
