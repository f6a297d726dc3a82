//! Descriptor headroom. Every held callback connection is an open file; a
//! host under a low `RLIMIT_NOFILE` once let 300 idle sockets take every
//! descriptor, so spawning a sandbox and opening the store failed with
//! `Too many open files`. The host raises its soft limit to the hard one at
//! start, and the callback listener holds at most what that limit leaves
//! after a reserve for everything else.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors always left to the rest of the host (the store, logs,
/// spawning sandboxes or QEMU, the egress gateway, MCP over HTTP), or a
/// quarter of the limit when that is more.
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

/// How many callback connections fit under an open-file limit of
/// `nofile`, at most `wanted`.
pub fn connection_cap(wanted: usize, nofile: u64) -> usize {
    let reserve = RESERVE.max(nofile / 4);
    let fits = usize::try_from(nofile.saturating_sub(reserve)).unwrap_or(usize::MAX);
    wanted.min(fits.max(MIN_CAP))
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
    fn raising_leaves_soft_at_hard() {
        let soft = raise_nofile_limit();
        let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, now), (hard, hard));
    }
}
