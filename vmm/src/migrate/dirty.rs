//! KVM's dirty log of guest memory (KVM_MEM_LOG_DIRTY_PAGES and
//! KVM_GET_DIRTY_LOG on slot 0), for live migration's pre-copy rounds.
//!
//! It sees the writes of the guest's vCPUs only: writes the monitor makes
//! (backends, xen-shim) are caught by the final round instead (see
//! [`super::live`]).

use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

use super::MigrateError;
use crate::memory::Memory;

const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1;

pub struct DirtyLog {
    vm: Arc<VmFd>,
    region: kvm_userspace_memory_region,
    /// Keeps the mapping the region points at alive.
    _mem: Arc<Memory>,
    on: Mutex<bool>,
}

impl DirtyLog {
    pub fn new(vm: Arc<VmFd>, region: kvm_userspace_memory_region, mem: Arc<Memory>) -> DirtyLog {
        DirtyLog {
            vm,
            region,
            _mem: mem,
            on: Mutex::new(false),
        }
    }

    fn set(&self, on: bool) -> Result<(), MigrateError> {
        let mut g = self.on.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = self.region;
        r.flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
        // SAFETY: the same mapping as the slot already has (held by _mem);
        // only the flags change.
        unsafe { self.vm.set_user_memory_region(r) }
            .map_err(|e| MigrateError::Kvm(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
        *g = on;
        Ok(())
    }

    /// Start logging (from a clean log).
    pub fn start(&self) -> Result<(), MigrateError> {
        self.set(true)?;
        self.take(0).map(|_| ())
    }

    pub fn stop(&self) {
        if *self.on.lock().unwrap_or_else(|e| e.into_inner()) {
            if let Err(e) = self.set(false) {
                log::warn!("dirty log: {e}");
            }
        }
    }

    /// The frames below `limit` written since the last call (the log is
    /// cleared by reading it).
    pub fn take(&self, limit: u64) -> Result<Vec<u64>, MigrateError> {
        let bitmap = self
            .vm
            .get_dirty_log(0, self.region.memory_size as usize)
            .map_err(|e| MigrateError::Kvm(format!("KVM_GET_DIRTY_LOG: {e}")))?;
        Ok(frames_of(&bitmap, limit))
    }
}

/// The set bits of `bitmap` below `limit`, in order.
pub fn frames_of(bitmap: &[u64], limit: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, &w) in bitmap.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            let b = u64::from(w.trailing_zeros());
            let pfn = i as u64 * 64 + b;
            if pfn >= limit {
                return out;
            }
            out.push(pfn);
            w &= w - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_of_lists_set_bits_below_the_limit() {
        assert_eq!(
            super::frames_of(&[0b1010, 1 << 63 | 1], 200),
            [1, 3, 64, 127]
        );
        assert_eq!(super::frames_of(&[0b1010, 1], 64), [1, 3]);
        assert!(super::frames_of(&[0, 0], 128).is_empty());
    }
}
