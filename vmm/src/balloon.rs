//! Memory ballooning on the monitor side: the frames above the boot
//! allocation start unpopulated (their M2P entries invalid), and
//! `xenkvm mem-set` / `mem-max` move the guest's target and the domain's
//! maximum (Xen's `max_pages`), as libxl does for `xl mem-set` / `mem-max`.

use std::sync::atomic::Ordering;

use xen_shim::domain::Domain;
use xen_shim::mem::{GuestMem, MemError};
use xen_shim::memop::INVALID_M2P;

use crate::layout::{MonitorLayout, PAGE};

/// The slack libxl adds to a domain's max_pages above its target
/// (LIBXL_MAXMEM_CONSTANT), KiB.
pub const MAXMEM_SLACK_KIB: u64 = 1024;

/// Mark the M2P entries of frames `first..` (unpopulated at boot) invalid.
pub fn clear_m2p(mem: &dyn GuestMem, l: &MonitorLayout, first: u64) -> Result<(), MemError> {
    let total = l.ram / PAGE;
    let chunk = vec![0xffu8; 64 * 1024];
    let mut mfn = first;
    while mfn < total {
        let n = (total - mfn).min(chunk.len() as u64 / 8);
        mem.write(l.m2p + mfn * 8, &chunk[..(n * 8) as usize])?;
        mfn += n;
    }
    debug_assert_eq!(INVALID_M2P, u64::MAX);
    Ok(())
}

/// Why a memory request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    #[error("{0} MiB is above the domain's memory region of {1} MiB (its maxmem at creation); xenkvm cannot grow the region")]
    AboveRegion(u64, u64),
    #[error("{0} MiB is above the domain's maximum of {1} MiB (xenkvm mem-max)")]
    AboveMax(u64, u64),
    #[error("{0} MiB is below the domain's memory target of {1} MiB (mem-set first)")]
    BelowTarget(u64, u64),
    #[error("{0} MiB is less than the {1} MiB a guest needs")]
    TooSmall(u64, u64),
}

/// The region size of `dom`, MiB.
pub fn region_mib(dom: &Domain) -> u64 {
    (dom.layout.nr_pages * PAGE) >> 20
}

/// The domain's reservation (populated frames), MiB.
pub fn current_mib(dom: &Domain) -> u64 {
    let pages = dom
        .mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .populated();
    (pages * PAGE) >> 20
}

/// The domain's maximum (max_pages), MiB.
pub fn max_mib(dom: &Domain) -> u64 {
    (dom.max_pages.load(Ordering::SeqCst) * PAGE) >> 20
}

/// `xl mem-set`: check `target_mib` against the maximum `max_mib` (the
/// static-max) and raise or lower max_pages to the target plus libxl's
/// slack, within the region. Returns the value for `memory/target`, KiB.
pub fn set_target(dom: &Domain, target_mib: u64, max_mib: u64) -> Result<u64, BalloonError> {
    if target_mib < crate::memory::MIN_GUEST_MIB {
        return Err(BalloonError::TooSmall(
            target_mib,
            crate::memory::MIN_GUEST_MIB,
        ));
    }
    if target_mib > max_mib {
        return Err(BalloonError::AboveMax(target_mib, max_mib));
    }
    let kib = target_mib << 10;
    let pages = ((kib + MAXMEM_SLACK_KIB) * 1024 / PAGE).min(dom.layout.nr_pages);
    dom.max_pages.store(pages, Ordering::SeqCst);
    Ok(kib)
}

/// `xl mem-max`: the new maximum, MiB, at most the region and at least
/// the current target. Sets max_pages (plus libxl's slack, within the
/// region); returns the value for `memory/static-max`, KiB.
pub fn set_max(dom: &Domain, max_mib: u64, target_mib: u64) -> Result<u64, BalloonError> {
    let region = region_mib(dom);
    if max_mib > region {
        return Err(BalloonError::AboveRegion(max_mib, region));
    }
    if max_mib < target_mib {
        return Err(BalloonError::BelowTarget(max_mib, target_mib));
    }
    let kib = max_mib << 10;
    let pages = ((kib + MAXMEM_SLACK_KIB) * 1024 / PAGE).min(dom.layout.nr_pages);
    dom.max_pages.store(pages, Ordering::SeqCst);
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_shim::testing::test_domain;

    #[test]
    fn target_and_max_follow_libxl() {
        // A 512 MiB region.
        let (dom, _) = test_domain(512 * 256);
        assert_eq!(region_mib(&dom), 512);
        assert_eq!(set_target(&dom, 128, 512), Ok(128 << 10));
        assert_eq!(dom.max_pages.load(Ordering::SeqCst), 128 * 256 + 256);
        assert_eq!(set_target(&dom, 512, 512), Ok(512 << 10));
        assert_eq!(
            dom.max_pages.load(Ordering::SeqCst),
            512 * 256,
            "within the region"
        );
        assert_eq!(
            set_target(&dom, 600, 512),
            Err(BalloonError::AboveMax(600, 512))
        );
        assert_eq!(set_target(&dom, 8, 512), Err(BalloonError::TooSmall(8, 64)));
        assert_eq!(
            set_max(&dom, 1024, 256),
            Err(BalloonError::AboveRegion(1024, 512))
        );
        assert_eq!(
            set_max(&dom, 200, 256),
            Err(BalloonError::BelowTarget(200, 256))
        );
        assert_eq!(set_max(&dom, 300, 256), Ok(300 << 10));
        assert_eq!(dom.max_pages.load(Ordering::SeqCst), 300 * 256 + 256);
    }

    #[test]
    fn m2p_above_the_boot_allocation_is_invalid() {
        let l = MonitorLayout::new(64 << 20);
        let mem = xen_shim::mem::VecMem::new(l.end as usize);
        clear_m2p(&mem, &l, 1000).unwrap();
        assert_eq!(mem.read_u64(l.m2p + 999 * 8).unwrap(), 0);
        assert_eq!(mem.read_u64(l.m2p + 1000 * 8).unwrap(), u64::MAX);
        assert_eq!(mem.read_u64(l.m2p + (16383) * 8).unwrap(), u64::MAX);
        assert_eq!(mem.read_u64(l.m2p + 16384 * 8).unwrap(), 0);
    }
}
