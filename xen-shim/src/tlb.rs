//! TLB flush clock (Xen's `tlbflush_clock` / `tlbflush_timestamp`).
//!
//! A frame whose type count falls to zero may still be reachable through
//! stale TLB or paging-structure cache entries of vCPUs that ran while it
//! was mapped: a writable mapping of a frame that is about to become a page
//! table, or a cached walk through a page table that is about to become
//! writable. Before such a frame takes a *different* type, every vCPU that
//! may still hold such an entry must flush.
//!
//! The domain keeps a clock. A frame is stamped with the clock when its
//! type count falls to zero; a vCPU records a new tick of the clock each
//! time it takes a full TLB flush (before it runs guest code again). A vCPU
//! whose last flush tick is not newer than a frame's stamp may hold stale
//! entries for that frame; one whose tick is newer cannot. Only those are
//! flushed, so a domain that keeps retyping frames (fork-heavy guests) does
//! not flush every vCPU on every retype.

use std::sync::atomic::{AtomicU64, Ordering};

/// The per-domain flush clock and the last flush tick of each vCPU.
#[derive(Debug)]
pub struct TlbClock {
    now: AtomicU64,
    flushed: Vec<AtomicU64>,
}

impl TlbClock {
    /// A clock for `nr_vcpus` vCPUs (at most 64 take part: flush masks are
    /// 64-bit, as the vCPU masks of the Xen ABI).
    pub fn new(nr_vcpus: u32) -> TlbClock {
        TlbClock {
            // Stamps start at 1: stamp 0 means "never mapped since boot".
            now: AtomicU64::new(1),
            flushed: (0..nr_vcpus.min(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The stamp for a frame whose type count has just fallen to zero.
    pub fn stamp(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    /// vCPU `vcpu` is about to flush its whole TLB, before it runs guest
    /// code again: entries dropped before now are gone once it runs.
    pub fn note_flush(&self, vcpu: u32) {
        if let Some(f) = self.flushed.get(vcpu as usize) {
            let tick = self.now.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
            f.store(tick, Ordering::SeqCst);
        }
    }

    /// The vCPUs (bit per vCPU) that may still hold TLB entries for a frame
    /// stamped `stamp` (Xen's tlbflush_filter). Empty for stamp 0.
    pub fn stale_mask(&self, stamp: u64) -> u64 {
        if stamp == 0 {
            return 0;
        }
        self.flushed
            .iter()
            .enumerate()
            .filter(|(_, f)| f.load(Ordering::SeqCst) <= stamp)
            .fold(0, |m, (i, _)| m | (1u64 << i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vcpus_not_flushed_since_the_stamp_are_stale() {
        let c = TlbClock::new(3);
        assert_eq!(c.stale_mask(0), 0);
        let s = c.stamp();
        assert_eq!(c.stale_mask(s), 0b111);
        c.note_flush(1);
        assert_eq!(c.stale_mask(s), 0b101);
        c.note_flush(0);
        c.note_flush(2);
        assert_eq!(c.stale_mask(s), 0);
        // A drop after their last flushes makes all of them stale again.
        let s2 = c.stamp();
        assert_eq!(c.stale_mask(s2), 0b111);
        c.note_flush(2);
        assert_eq!(c.stale_mask(s2), 0b011);
        // Out-of-range vCPUs are ignored, not a panic.
        c.note_flush(99);
    }

    use crate::mmu::PageType;
    use crate::testing::{test_domain_vcpus, TestPlatform};

    const RW: u64 = 0x67;
    const RO: u64 = 0x65;

    /// A two-vCPU domain with an L1 at frame 4 (pinned), whose entry 0
    /// maps frame 10 writable.
    fn setup() -> (
        std::sync::Arc<crate::domain::Domain>,
        std::sync::Arc<TestPlatform>,
    ) {
        let (dom, p) = test_domain_vcpus(64, 2);
        dom.mem.write_u64(0x4000, 0xa000 | RW).unwrap();
        let mut log = Vec::new();
        let mut mmu = dom.mmu.lock().unwrap();
        mmu.pin(&*dom.mem, &mut log, 4, 1).unwrap();
        assert_eq!(mmu.type_of(10), PageType::Writable);
        drop(mmu);
        (dom, p)
    }

    fn flushes(p: &TestPlatform) -> Vec<u64> {
        std::mem::take(&mut *p.flushes.lock().unwrap())
    }

    /// Drop the writable mapping of frame 10 (L1 entry 0 becomes read-only).
    fn drop_writable(dom: &crate::domain::Domain) {
        let mut log = Vec::new();
        let mut mmu = dom.mmu.lock().unwrap();
        mmu.mod_entry(&*dom.mem, &mut log, 4, 0, 0xa000 | RO, false)
            .unwrap();
        assert_eq!(mmu.type_of(10), PageType::None);
    }

    fn pin_l1(dom: &crate::domain::Domain, mfn: u64) {
        let mut log = Vec::new();
        let mut mmu = dom.mmu.lock().unwrap();
        mmu.pin(&*dom.mem, &mut log, mfn, 1).unwrap();
    }

    #[test]
    fn writable_frame_becoming_a_page_table_flushes_stale_vcpus_first() {
        let (dom, p) = setup();
        drop_writable(&dom);
        assert!(flushes(&p).is_empty());
        pin_l1(&dom, 10);
        assert_eq!(flushes(&p), vec![0b11]);
    }

    #[test]
    fn no_flush_when_every_vcpu_flushed_since_the_writable_mapping_went() {
        let (dom, p) = setup();
        drop_writable(&dom);
        dom.tlb.note_flush(0);
        dom.tlb.note_flush(1);
        pin_l1(&dom, 10);
        assert!(flushes(&p).is_empty());
    }

    #[test]
    fn only_the_vcpus_that_did_not_flush_are_flushed() {
        let (dom, p) = setup();
        // vCPU 0 flushed before the drop, vCPU 1 after it.
        dom.tlb.note_flush(0);
        drop_writable(&dom);
        dom.tlb.note_flush(1);
        pin_l1(&dom, 10);
        assert_eq!(flushes(&p), vec![0b01]);
    }

    #[test]
    fn frames_never_mapped_or_keeping_their_type_need_no_flush() {
        let (dom, p) = setup();
        // Frame 11 was never typed: pinning it flushes nothing.
        pin_l1(&dom, 11);
        // Frame 10 mapped writable again after its writable mapping went:
        // same type, nothing stale can be abused.
        drop_writable(&dom);
        let mut log = Vec::new();
        let mut mmu = dom.mmu.lock().unwrap();
        mmu.mod_entry(&*dom.mem, &mut log, 4, 1, 0xa000 | RW, false)
            .unwrap();
        drop(mmu);
        assert!(flushes(&p).is_empty());
    }

    #[test]
    fn page_table_becoming_writable_flushes_cached_walks_first() {
        let (dom, p) = setup();
        // Frame 12: an L1 that is unpinned, then mapped writable.
        pin_l1(&dom, 12);
        let mut log = Vec::new();
        let mut mmu = dom.mmu.lock().unwrap();
        mmu.unpin(&*dom.mem, 12).unwrap();
        assert!(flushes(&p).is_empty());
        mmu.mod_entry(&*dom.mem, &mut log, 4, 2, 0xc000 | RW, false)
            .unwrap();
        assert_eq!(mmu.type_of(12), PageType::Writable);
        drop(mmu);
        assert_eq!(flushes(&p), vec![0b11]);
    }
}
