//! Descriptor headroom. Every held connection is an open file; a host
//! under a low `RLIMIT_NOFILE` once let 300 idle sockets take every
//! descriptor, so spawning a sandbox and opening the store failed with
//! `Too many open files`. The host raises its soft limit to the hard one at
//! start, and its listeners together hold at most what that limit leaves
//! after a reserve for everything else, shared out in proportion to what
//! each asks for.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors always left to the rest of the host (the store, logs,
/// spawning sandboxes or QEMU, the listeners themselves and the refusals
/// they answer over their caps), or a quarter of the limit when that is
/// more.
const RESERVE: u64 = 128;
/// The limit never lowers the cap below this, however low it is.
const MIN_CAP: usize = 8;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns
/// the soft limit in force afterwards (the old one if raising failed,
/// which is logged).
pub fn raise_nofile_limit() -> u64 {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return u64::MAX;
        }
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::debug!(from = soft, to = hard, "open-file limit raised");
            hard
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            soft
        }
    }
}

/// What one listener asks of the descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Its connection cap as set.
    pub connections: usize,
    /// Descriptors one of its connections holds (a proxied connection holds
    /// its upstream too).
    pub fds_each: usize,
}

/// The caps of listeners asking `wants` under an open-file limit of
/// `nofile`: each as asked when all fit after the reserve, else each
/// lowered in the same proportion (never below a small minimum, nor above
/// what it asked).
pub fn connection_caps(nofile: u64, wants: &[Want]) -> Vec<usize> {
    let reserve = RESERVE.max(nofile / 4);
    let budget = u128::from(nofile.saturating_sub(reserve));
    let asked: u128 = wants
        .iter()
        .map(|w| w.connections as u128 * w.fds_each.max(1) as u128)
        .sum();
    wants
        .iter()
        .map(|w| {
            if asked <= budget {
                return w.connections;
            }
            let share = w.connections as u128 * budget / asked;
            let share = usize::try_from(share).unwrap_or(usize::MAX);
            w.connections.min(share.max(MIN_CAP))
        })
        .collect()
}

/// How many connections of one listener alone fit under an open-file
/// limit of `nofile`, at most `wanted`.
pub fn connection_cap(wanted: usize, nofile: u64) -> usize {
    connection_caps(
        nofile,
        &[Want {
            connections: wanted,
            fds_each: 1,
        }],
    )[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve_under_low_limits_and_keeps_the_setting_under_high_ones() {
        assert_eq!(connection_cap(1024, 256), 128);
        assert_eq!(connection_cap(1024, 1024), 768);
        assert_eq!(connection_cap(1024, 1 << 20), 1024);
        assert_eq!(connection_cap(1024, 64), MIN_CAP);
        assert_eq!(connection_cap(4, 1 << 20), 4);
        assert_eq!(connection_cap(1024, u64::MAX), 1024);
    }

    #[test]
    fn listeners_share_what_is_left_in_proportion_and_double_descriptors_count_twice() {
        let wants = [
            Want {
                connections: 1024,
                fds_each: 1,
            },
            Want {
                connections: 1024,
                fds_each: 2,
            },
            Want {
                connections: 256,
                fds_each: 1,
            },
        ];
        assert_eq!(connection_caps(1 << 20, &wants), [1024, 1024, 256]);
        // 4096 leaves 3072 for 3328 asked.
        let caps = connection_caps(4096, &wants);
        assert_eq!(caps, [945, 945, 236]);
        let used: usize = caps[0] + 2 * caps[1] + caps[2];
        assert!(used <= 3072, "{used}");
        assert_eq!(connection_caps(64, &wants), [MIN_CAP; 3]);
    }

    #[test]
    fn raising_leaves_soft_at_hard() {
        let soft = raise_nofile_limit();
        let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, now), (hard, hard));
    }
}
