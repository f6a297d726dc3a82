//! The per-job cap on upstream connections (`DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB`):
//! every tunnel and forwarded request holds a [`JobConn`] for as long as
//! its upstream socket is open (an intercepted tunnel one more for the
//! job's side, which has no upstream of its own), so one job cannot take
//! every descriptor and connection the gateway has while others wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Upstream connections held, by job.
#[derive(Debug)]
pub struct JobConns {
    cap: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One upstream connection of a job; counted until dropped.
#[derive(Debug)]
pub struct JobConn {
    owner: Arc<JobConns>,
    job: String,
}

/// The job holds its cap already.
#[derive(Debug, thiserror::Error)]
#[error(
    "the job already holds {cap} connections through the gateway, its cap \
     (DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB); close some or try again"
)]
pub struct OverCap {
    /// The cap.
    pub cap: usize,
}

impl JobConns {
    /// At most `cap` connections per job.
    pub fn new(cap: usize) -> Arc<JobConns> {
        Arc::new(JobConns {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more connection for `job`, unless it holds its cap.
    pub fn take(self: &Arc<Self>, job: &str) -> Result<JobConn, OverCap> {
        let mut held = self.lock();
        let n = held.entry(job.to_string()).or_insert(0);
        if *n >= self.cap {
            return Err(OverCap { cap: self.cap });
        }
        *n += 1;
        Ok(JobConn {
            owner: self.clone(),
            job: job.to_string(),
        })
    }

    /// Connections `job` holds now.
    #[cfg(test)]
    fn held(&self, job: &str) -> usize {
        self.lock().get(job).copied().unwrap_or(0)
    }
}

impl Drop for JobConn {
    fn drop(&mut self) {
        let mut held = self.owner.lock();
        if let Some(n) = held.get_mut(&self.job) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_at_its_cap_is_refused_while_others_are_not_and_dropping_frees() {
        let q = JobConns::new(2);
        let a1 = q.take("a").unwrap();
        let _a2 = q.take("a").unwrap();
        assert_eq!(q.take("a").unwrap_err().cap, 2);
        let _b = q.take("b").unwrap();
        drop(a1);
        assert_eq!(q.held("a"), 1);
        let _a3 = q.take("a").unwrap();
        assert_eq!(q.held("a"), 2);
        drop(_b);
        assert_eq!(q.held("b"), 0);
        assert!(
            q.lock().get("b").is_none(),
            "no entry left for a job at zero"
        );
    }
}
