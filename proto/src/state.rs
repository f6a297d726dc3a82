//! Job states and the one function that decides which transitions are legal.
//!
//! `pending → provisioning → running → success | failed | timeout | cancelled`.
//! Final states are final: the store refuses every transition out of them,
//! so a late callback after a cancel or a timeout changes nothing.

use serde::{Deserialize, Serialize};

/// Where a job is in its life. Names match the original server's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, waiting for a VM slot.
    Pending,
    /// A VM is being created and booted.
    Provisioning,
    /// The guest has fetched its manifest and is running the job.
    Running,
    /// The agent finished and reported success.
    Success,
    /// The agent failed, or the job could not be run.
    Failed,
    /// The job ran past its timeout and was stopped.
    Timeout,
    /// A client cancelled the job.
    Cancelled,
}

/// An illegal state change, as refused by [`JobState::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job cannot go from {from} to {to}")]
pub struct TransitionError {
    /// The current state.
    pub from: JobState,
    /// The refused target.
    pub to: JobState,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Provisioning,
        JobState::Running,
        JobState::Success,
        JobState::Failed,
        JobState::Timeout,
        JobState::Cancelled,
    ];

    /// True for success, failed, timeout and cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failed | JobState::Timeout | JobState::Cancelled
        )
    }

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Provisioning => "provisioning",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Timeout => "timeout",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Decides whether `self → to` is legal. This is the only place that
    /// does; everything that changes a job's state goes through it.
    ///
    /// Any non-final state may end (failed, timeout, cancelled); only a
    /// running job may succeed; the forward steps go one at a time.
    pub fn transition(self, to: JobState) -> Result<JobState, TransitionError> {
        use JobState::*;
        let legal = match (self, to) {
            (from, _) if from.is_final() => false,
            (Pending, Provisioning) | (Provisioning, Running) => true,
            (Running, Success) => true,
            (_, Failed | Timeout | Cancelled) => true,
            _ => false,
        };
        if legal {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job status {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn transition_table() {
        let legal = [
            (Pending, Provisioning),
            (Pending, Failed),
            (Pending, Timeout),
            (Pending, Cancelled),
            (Provisioning, Running),
            (Provisioning, Failed),
            (Provisioning, Timeout),
            (Provisioning, Cancelled),
            (Running, Success),
            (Running, Failed),
            (Running, Timeout),
            (Running, Cancelled),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(
                    from.transition(to).is_ok(),
                    expected,
                    "{from} -> {to} should be {}",
                    if expected { "legal" } else { "refused" }
                );
            }
        }
    }

    #[test]
    fn final_states_are_final() {
        for s in JobState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in JobState::ALL {
                assert!(s.transition(to).is_err());
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("done".parse::<JobState>().unwrap_err().contains("pending"));
    }
}
