//! VMIDs from our configured range. `GET /cluster/nextid` answers the
//! lowest free id in the whole cluster, which two hosts (or two of our own
//! jobs) can receive at the same moment; so we pick ids ourselves: the
//! lowest id in the range that the cluster does not use and that we have
//! not handed out yet. A clone that still collides (`config file already
//! exists`, another tool was faster) makes the caller mark the id taken and
//! ask again.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// Hands out VMIDs.
#[derive(Debug)]
pub struct VmidAllocator {
    range: RangeInclusive<u32>,
    /// Ids we handed out and still consider ours (until released).
    reserved: Mutex<BTreeSet<u32>>,
}

/// No id left.
#[derive(Debug, thiserror::Error)]
#[error("no free VMID in PROXMOX_VMID_RANGE {first}-{last} ({in_use} in use)")]
pub struct RangeExhausted {
    /// Range start.
    pub first: u32,
    /// Range end.
    pub last: u32,
    /// Ids in use within the range.
    pub in_use: usize,
}

impl VmidAllocator {
    /// An allocator for `range`.
    pub fn new(range: RangeInclusive<u32>) -> Self {
        VmidAllocator {
            range,
            reserved: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether an id is ours to manage.
    pub fn in_range(&self, vmid: u32) -> bool {
        self.range.contains(&vmid)
    }

    /// The lowest id in range that is neither in `used` (the cluster's VMIDs)
    /// nor reserved; reserves it.
    pub fn allocate(&self, used: &BTreeSet<u32>) -> Result<u32, RangeExhausted> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let id = self
            .range
            .clone()
            .find(|id| !used.contains(id) && !reserved.contains(id));
        match id {
            Some(id) => {
                reserved.insert(id);
                Ok(id)
            }
            None => Err(RangeExhausted {
                first: *self.range.start(),
                last: *self.range.end(),
                in_use: used.iter().filter(|id| self.range.contains(id)).count() + reserved.len(),
            }),
        }
    }

    /// Forgets an id (its VM is gone, or the clone never started).
    pub fn release(&self, vmid: u32) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vmid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_used_and_reserved_and_reuses_released() {
        let a = VmidAllocator::new(100..=103);
        let used: BTreeSet<u32> = [100].into_iter().collect();
        assert_eq!(a.allocate(&used).unwrap(), 101);
        assert_eq!(a.allocate(&used).unwrap(), 102);
        a.release(101);
        assert_eq!(a.allocate(&used).unwrap(), 101);
        assert_eq!(a.allocate(&used).unwrap(), 103);
        let err = a.allocate(&used).unwrap_err();
        assert!(err.to_string().contains("100-103"), "{err}");
        assert!(a.in_range(103) && !a.in_range(104));
    }
}
