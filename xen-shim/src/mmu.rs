//! PV MMU: page-type tracking and Xen's page-table validation rules.
//!
//! Every RAM frame has a type (none, writable, L1..L4, descriptor) and a
//! type count, as in Xen: a frame referenced by a validated L(n+1) entry, or
//! pinned, or installed as a root, holds type Ln; a frame mapped writable by a
//! validated L1 entry holds type "writable". A frame can only change type when
//! its count is zero, so a page table is never writable by the guest and a
//! writable page never becomes a page table.
//!
//! Writes to page-table frames are done to guest memory and also recorded in
//! a [`PtLog`]: on hosts whose KVM shadows guest page tables, the monitor must
//! replay them through the vCPU so that KVM sees them.

use std::sync::Arc;

use crate::abi::{errno::*, pte, RESERVED_L4_FIRST, RESERVED_L4_LAST};
use crate::domain::Platform;
use crate::mem::GuestMem;
use crate::tlb::TlbClock;

/// Page-table writes that the vCPU must replay (guest-physical address, value).
pub type PtLog = Vec<(u64, u64)>;

/// Batched page-table hypercalls (mmu_update, mmuext_op, multicall) stop
/// and continue through a hypercall continuation, as Xen's do when
/// preempted, once a vCPU's [`PtLog`] holds this many writes: the monitor
/// replays them on the way back to the guest, so the log stays bounded
/// whatever the size of the batch. 512 writes fit in one ring-0 replay chunk.
///
/// One request can still add more than that: the writes made while
/// validating the page-table tree it types (at most 512 per frame validated).
/// Xen makes that validation itself preemptible (PGT_partial); xenkvm does
/// not yet.
pub const PT_LOG_PREEMPT: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageType {
    #[default]
    None,
    Writable,
    L1,
    L2,
    L3,
    L4,
    Desc,
}

impl PageType {
    pub fn level(lvl: u8) -> PageType {
        match lvl {
            1 => PageType::L1,
            2 => PageType::L2,
            3 => PageType::L3,
            _ => PageType::L4,
        }
    }
    fn pt_level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct FrameInfo {
    ty: PageType,
    count: u32,
    pinned: bool,
    /// The type the frame last had, and the TLB clock when its count fell
    /// to zero (0: never since boot); see [`crate::tlb`].
    last_ty: PageType,
    stamp: u64,
    /// Not populated: handed back by XENMEM_decrease_reservation or above
    /// the boot allocation (Xen: the frame does not belong to the domain).
    absent: bool,
}

/// Flags refused in L1 entries (bit 62 is Xen's grant-mapping marker).
const L1_DISALLOW: u64 = pte::GNTTAB;
/// Flags refused in L2..L4 entries: superpages, global, cache control.
const LN_DISALLOW: u64 = pte::PSE | pte::G | pte::PWT | pte::PCD | pte::GNTTAB;

/// The per-domain PV MMU state.
pub struct Mmu {
    frames: Vec<FrameInfo>,
    /// Non-RAM frames the guest may map read/write as data (shared_info, grant frames).
    extra_data_frames: Vec<u64>,
    /// Values the monitor keeps in L4 slots 256..=271 of every validated L4.
    reserved_l4: [u64; 16],
    /// Flush clock and flush requests; absent while the builder lays out
    /// the domain (no vCPU has run yet).
    tlb: Option<TlbHook>,
    /// Populated frames (the domain's reservation, Xen's tot_pages).
    populated: u64,
    /// No frame below this one is absent (the allocator's scan start).
    free_hint: u64,
}

/// How the MMU asks for TLB flushes before a frame changes type.
struct TlbHook {
    clock: Arc<TlbClock>,
    platform: Arc<dyn Platform>,
}

impl Mmu {
    pub fn new(nr_ram_frames: u64) -> Mmu {
        Mmu {
            frames: vec![FrameInfo::default(); nr_ram_frames as usize],
            extra_data_frames: Vec::new(),
            reserved_l4: [0; 16],
            tlb: None,
            populated: nr_ram_frames,
            free_hint: nr_ram_frames,
        }
    }

    /// From now on, a frame that changes type first has the vCPUs that may
    /// still hold stale TLB entries for it flushed (`Platform::flush_tlbs`).
    pub fn attach_tlb(&mut self, clock: Arc<TlbClock>, platform: Arc<dyn Platform>) {
        self.tlb = Some(TlbHook { clock, platform });
    }

    pub fn nr_frames(&self) -> u64 {
        self.frames.len() as u64
    }

    pub fn set_reserved_l4(&mut self, slots: [u64; 16]) {
        self.reserved_l4 = slots;
    }

    pub fn reserved_l4(&self) -> &[u64; 16] {
        &self.reserved_l4
    }

    pub fn add_data_frame(&mut self, mfn: u64) {
        self.extra_data_frames.push(mfn);
    }

    /// Whether `mfn` is a populated RAM frame of the domain.
    pub fn is_ram(&self, mfn: u64) -> bool {
        self.frames.get(mfn as usize).is_some_and(|f| !f.absent)
    }

    /// Current type of a frame (None when untyped or not RAM).
    pub fn type_of(&self, mfn: u64) -> PageType {
        match self.frames.get(mfn as usize) {
            Some(f) if f.count > 0 => f.ty,
            _ => PageType::None,
        }
    }

    /// How many type references a frame holds (0 when untyped or not RAM).
    pub fn type_count(&self, mfn: u64) -> u32 {
        self.frames.get(mfn as usize).map_or(0, |f| f.count)
    }

    /// Drop every type reference and pin (populated frames stay so): a
    /// restore then types the tables of the image afresh by pinning them.
    pub fn clear_types(&mut self) {
        for f in &mut self.frames {
            *f = FrameInfo {
                absent: f.absent,
                ..FrameInfo::default()
            };
        }
    }

    pub fn is_pinned(&self, mfn: u64) -> bool {
        self.frames.get(mfn as usize).is_some_and(|f| f.pinned)
    }

    /// Take a type reference; validates a page table on its first reference.
    pub fn get_type(
        &mut self,
        mem: &dyn GuestMem,
        log: &mut PtLog,
        mfn: u64,
        ty: PageType,
    ) -> Result<(), i64> {
        let Some(f) = self.frames.get_mut(mfn as usize) else {
            return if ty == PageType::Writable && self.extra_data_frames.contains(&mfn) {
                Ok(())
            } else {
                Err(-EINVAL)
            };
        };
        if f.absent {
            return Err(-EINVAL);
        }
        if f.count > 0 {
            if f.ty != ty {
                return Err(-EINVAL);
            }
            f.count = f.count.checked_add(1).ok_or(-EINVAL)?;
            return Ok(());
        }
        if f.stamp != 0 && f.last_ty != ty {
            // Xen's get_page_type: on a type change, vCPUs that may still
            // hold entries from the old use flush before the frame is
            // validated and used in its new type.
            if let Some(t) = &self.tlb {
                let mask = t.clock.stale_mask(f.stamp);
                if mask != 0 {
                    log::trace!("mfn {mfn:#x} {:?} -> {ty:?}: flush {mask:#x}", f.last_ty);
                    t.platform.flush_tlbs(mask);
                }
            }
        }
        f.ty = ty;
        f.count = 1;
        if let Some(level) = ty.pt_level() {
            if let Err(e) = self.validate_table(mem, log, mfn, level) {
                let f = &mut self.frames[mfn as usize];
                f.count = 0;
                f.ty = PageType::None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drop a type reference; a page table whose count reaches zero releases
    /// the references its entries hold.
    pub fn put_type(&mut self, mem: &dyn GuestMem, mfn: u64) {
        let Some(f) = self.frames.get_mut(mfn as usize) else {
            return;
        };
        if f.count == 0 {
            return;
        }
        f.count -= 1;
        if f.count > 0 {
            return;
        }
        let ty = f.ty;
        f.ty = PageType::None;
        // Descriptor frames are only read by the monitor, which keeps its
        // own validated copy: nothing stale can reach them.
        if ty != PageType::Desc {
            if let Some(t) = &self.tlb {
                f.last_ty = ty;
                f.stamp = t.clock.stamp();
            }
        }
        if let Some(level) = ty.pt_level() {
            self.release_entries(mem, mfn, level, 512);
        }
    }

    /// Drop the references held by entries `0..upto` of a level-`level` table.
    fn release_entries(&mut self, mem: &dyn GuestMem, mfn: u64, level: u8, upto: usize) {
        for i in (0..upto).filter(|&i| guest_slot(level, i)) {
            if let Ok(e) = mem.read_u64((mfn << 12) + i as u64 * 8) {
                self.put_entry_refs(mem, level, e);
            }
        }
    }

    fn validate_table(
        &mut self,
        mem: &dyn GuestMem,
        log: &mut PtLog,
        mfn: u64,
        level: u8,
    ) -> Result<(), i64> {
        let base = mfn << 12;
        let mut page = [0u8; 4096];
        mem.read(base, &mut page).map_err(|_| -EFAULT)?;
        let entry =
            |i: usize| u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        for i in (0..512usize).filter(|&i| guest_slot(level, i)) {
            let e = entry(i);
            match self.get_entry_refs(mem, log, level, e) {
                Ok(adj) => {
                    if adj != e {
                        write_pt(mem, log, base + i as u64 * 8, adj)?;
                    }
                }
                Err(err) => {
                    log::debug!("validate L{level} mfn {mfn:#x} slot {i}: entry {e:#x} refused");
                    self.release_entries(mem, mfn, level, i);
                    return Err(err);
                }
            }
        }
        if level == 4 {
            for (k, v) in self.reserved_l4.iter().enumerate() {
                let a = base + (RESERVED_L4_FIRST + k) as u64 * 8;
                if entry(RESERVED_L4_FIRST + k) != *v {
                    write_pt(mem, log, a, *v)?;
                }
            }
        }
        Ok(())
    }

    /// Check one entry of a level-`level` table, take the references it
    /// needs, and return it with Xen's adjustments applied.
    pub fn get_entry_refs(
        &mut self,
        mem: &dyn GuestMem,
        log: &mut PtLog,
        level: u8,
        e: u64,
    ) -> Result<u64, i64> {
        if e & pte::P == 0 {
            return Ok(e);
        }
        let target = (e & pte::ADDR_MASK) >> 12;
        if level == 1 {
            if e & L1_DISALLOW != 0 {
                return Err(-EINVAL);
            }
            if !self.is_ram(target) && !self.extra_data_frames.contains(&target) {
                return Err(-EINVAL);
            }
            if e & pte::RW != 0 {
                self.get_type(mem, log, target, PageType::Writable)?;
            }
            Ok(if e & pte::US == 0 {
                e | pte::US | pte::GUEST_KERNEL
            } else if e & pte::GUEST_KERNEL == 0 {
                e | pte::G
            } else {
                e
            })
        } else {
            if e & LN_DISALLOW != 0 {
                return Err(-EINVAL);
            }
            self.get_type(mem, log, target, PageType::level(level - 1))?;
            Ok(if level == 4 {
                e | pte::US | pte::A
            } else {
                e | pte::US
            })
        }
    }

    /// Release the references an entry holds.
    pub fn put_entry_refs(&mut self, mem: &dyn GuestMem, level: u8, e: u64) {
        if e & pte::P == 0 {
            return;
        }
        let target = (e & pte::ADDR_MASK) >> 12;
        if level == 1 {
            if e & pte::RW != 0 {
                self.put_type(mem, target);
            }
        } else {
            self.put_type(mem, target);
        }
    }

    /// Validated update of entry `index` of page table `table` (Xen's mod_lN_entry).
    pub fn mod_entry(
        &mut self,
        mem: &dyn GuestMem,
        log: &mut PtLog,
        table: u64,
        index: u64,
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), i64> {
        let level = self.type_of(table).pt_level().ok_or(-EINVAL)?;
        let addr = (table << 12) + (index & 511) * 8;
        if !guest_slot(level, (index & 511) as usize) {
            return Err(-EINVAL);
        }
        let old = mem.read_u64(addr).map_err(|_| -EFAULT)?;
        let mut new = new;
        if preserve_ad {
            new |= old & (pte::A | pte::D);
        }
        let adj = self.get_entry_refs(mem, log, level, new)?;
        write_pt(mem, log, addr, adj)?;
        self.put_entry_refs(mem, level, old);
        Ok(())
    }

    /// MMUEXT_PIN_Ln_TABLE.
    pub fn pin(
        &mut self,
        mem: &dyn GuestMem,
        log: &mut PtLog,
        mfn: u64,
        level: u8,
    ) -> Result<(), i64> {
        if self.is_pinned(mfn) {
            return Err(-EINVAL);
        }
        self.get_type(mem, log, mfn, PageType::level(level))?;
        if let Some(f) = self.frames.get_mut(mfn as usize) {
            f.pinned = true;
        }
        Ok(())
    }

    /// MMUEXT_UNPIN_TABLE.
    pub fn unpin(&mut self, mem: &dyn GuestMem, mfn: u64) -> Result<(), i64> {
        match self.frames.get_mut(mfn as usize) {
            Some(f) if f.pinned => f.pinned = false,
            _ => return Err(-EINVAL),
        }
        self.put_type(mem, mfn);
        Ok(())
    }
}

/// Which frames are populated (the domain's reservation; see crate::memop).
impl Mmu {
    /// Frames `first..` start unpopulated (memory above the boot
    /// allocation, up to maxmem). Call before the guest runs.
    pub fn set_unpopulated_from(&mut self, first: u64) {
        for f in self.frames.iter_mut().skip(first as usize) {
            f.absent = true;
        }
        self.populated = self.populated.min(first);
        self.free_hint = self.free_hint.min(first);
    }

    /// Populated frames (Xen's tot_pages).
    pub fn populated(&self) -> u64 {
        self.populated
    }

    /// Take a populated frame away from the domain (guest_remove_page).
    /// Refused for a frame that is absent, pinned, or typed as a page
    /// table or descriptor page (its contents are in use by the MMU). A
    /// frame still mapped writable stays accounted: it cannot become a
    /// page table before those mappings go, and cannot be mapped again
    /// until it is populated again.
    pub fn depopulate(&mut self, mfn: u64) -> Result<(), i64> {
        let f = self.frames.get_mut(mfn as usize).ok_or(-EINVAL)?;
        if f.absent || f.pinned || (f.count > 0 && f.ty != PageType::Writable) {
            return Err(-EINVAL);
        }
        f.absent = true;
        self.populated -= 1;
        self.free_hint = self.free_hint.min(mfn);
        Ok(())
    }

    /// Whether `2^order` frames from `mfn` are all absent.
    pub fn range_absent(&self, mfn: u64, order: u32) -> bool {
        let n = 1u64 << order;
        mfn.checked_add(n)
            .is_some_and(|end| end <= self.nr_frames())
            && self.frames[mfn as usize..(mfn + n) as usize]
                .iter()
                .all(|f| f.absent)
    }

    /// Find `2^order` absent frames, aligned, below frame `limit`; returns
    /// the first and how many frames were looked at (the caller's work).
    pub fn find_absent(&mut self, order: u32, limit: u64) -> (Option<u64>, u64) {
        let n = 1u64 << order;
        let limit = limit.min(self.nr_frames());
        // Skip the populated prefix (counted: a guest that gives back a
        // low frame makes the next search start there again).
        let first = self.free_hint;
        while self.free_hint < self.nr_frames() && !self.frames[self.free_hint as usize].absent {
            self.free_hint += 1;
        }
        let skipped = self.free_hint - first;
        let mut mfn = self.free_hint & !(n - 1);
        let start = mfn;
        while mfn + n <= limit {
            if self.range_absent(mfn, order) {
                return (Some(mfn), skipped + mfn - start + n);
            }
            mfn += n;
        }
        (None, skipped + limit.saturating_sub(start))
    }

    /// Give absent frames `mfn..mfn + 2^order` back to the domain.
    pub fn populate(&mut self, mfn: u64, order: u32) -> Result<(), i64> {
        if !self.range_absent(mfn, order) {
            return Err(-EINVAL);
        }
        for f in &mut self.frames[mfn as usize..(mfn + (1 << order)) as usize] {
            f.absent = false;
        }
        self.populated += 1 << order;
        Ok(())
    }
}

/// Whether entry `i` of a level-`level` table belongs to the guest (L4 slots
/// 256..=271 are the hypervisor's).
fn guest_slot(level: u8, i: usize) -> bool {
    level != 4 || !(RESERVED_L4_FIRST..=RESERVED_L4_LAST).contains(&i)
}

/// Write a page-table entry and record it for replay on the vCPU.
pub fn write_pt(mem: &dyn GuestMem, log: &mut PtLog, gpa: u64, val: u64) -> Result<(), i64> {
    mem.write_u64(gpa, val).map_err(|_| -EFAULT)?;
    log.push((gpa, val));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;

    fn setup() -> (VecMem, Mmu, PtLog) {
        (VecMem::new(64 * 4096), Mmu::new(64), Vec::new())
    }

    #[test]
    fn pin_tree_types_frames_and_adjusts_entries() {
        let (m, mut mmu, mut log) = setup();
        // L4 at 1 -> L3 at 2 -> L2 at 3 -> L1 at 4 -> data 10 (RW) and L4 (RO)
        m.write_u64(0x1000 + 511 * 8, 0x2000 | 0x67).unwrap();
        m.write_u64(0x2000, 0x3000 | 0x67).unwrap();
        m.write_u64(0x3000, 0x4000 | 0x67).unwrap();
        m.write_u64(0x4000, 0xa000 | 0x23).unwrap();
        m.write_u64(0x4008, 0x1000 | 0x21).unwrap();
        mmu.set_reserved_l4([0x55000 | 0x63; 16]);
        mmu.pin(&m, &mut log, 1, 4).unwrap();
        assert_eq!(mmu.type_of(1), PageType::L4);
        assert_eq!(mmu.type_of(4), PageType::L1);
        assert_eq!(mmu.type_of(10), PageType::Writable);
        // kernel page gets US and bit 52
        assert_eq!(
            m.read_u64(0x4000).unwrap(),
            0xa000 | 0x23 | pte::US | pte::GUEST_KERNEL
        );
        assert_eq!(m.read_u64(0x1000 + 256 * 8).unwrap(), 0x55000 | 0x63);
        assert!(!log.is_empty());
        // double pin refused
        assert_eq!(mmu.pin(&m, &mut log, 1, 4), Err(-EINVAL));
        mmu.unpin(&m, 1).unwrap();
        assert_eq!(mmu.type_of(4), PageType::None);
        assert_eq!(mmu.type_of(10), PageType::None);
    }

    #[test]
    fn page_table_cannot_be_mapped_writable() {
        let (m, mut mmu, mut log) = setup();
        m.write_u64(0x4000, 0xa000 | 0x21).unwrap();
        mmu.pin(&m, &mut log, 4, 1).unwrap();
        // map the L1 itself writable through its own entry 1
        assert_eq!(
            mmu.mod_entry(&m, &mut log, 4, 1, 0x4000 | 0x23, false),
            Err(-EINVAL)
        );
        // read-only is fine
        mmu.mod_entry(&m, &mut log, 4, 1, 0x4000 | 0x21, false)
            .unwrap();
        // a writable-mapped frame cannot become a page table
        mmu.mod_entry(&m, &mut log, 4, 2, 0x5000 | 0x23, false)
            .unwrap();
        assert_eq!(mmu.pin(&m, &mut log, 5, 1), Err(-EINVAL));
    }

    #[test]
    fn monitor_frames_and_reserved_slots_refused() {
        let (m, mut mmu, mut log) = setup();
        mmu.pin(&m, &mut log, 4, 1).unwrap();
        // frame 100 is outside guest RAM (monitor-owned)
        assert_eq!(
            mmu.mod_entry(&m, &mut log, 4, 0, (100 << 12) | 0x21, false),
            Err(-EINVAL)
        );
        mmu.pin(&m, &mut log, 1, 4).unwrap();
        assert_eq!(
            mmu.mod_entry(&m, &mut log, 1, 256, 0x2000 | 0x67, false),
            Err(-EINVAL)
        );
        // superpage in L2 refused
        mmu.pin(&m, &mut log, 3, 2).unwrap();
        assert_eq!(
            mmu.mod_entry(&m, &mut log, 3, 0, 0x200000 | 0xe7, false),
            Err(-EINVAL)
        );
    }

    #[test]
    fn absent_frames_are_found_populated_and_refused_while_absent() {
        let (m, mut mmu, mut log) = setup();
        mmu.set_unpopulated_from(32);
        assert_eq!(mmu.populated(), 32);
        assert!(mmu.is_ram(31) && !mmu.is_ram(32));
        assert_eq!(mmu.pin(&m, &mut log, 40, 1), Err(-EINVAL));
        // Order 2 lands aligned; a range that is not all absent is refused.
        assert_eq!(mmu.find_absent(2, 64).0, Some(32));
        mmu.populate(36, 2).unwrap();
        assert_eq!(mmu.populate(34, 2), Err(-EINVAL));
        assert_eq!(mmu.find_absent(2, 64).0, Some(32));
        assert_eq!(mmu.find_absent(3, 64).0, Some(40));
        assert_eq!(mmu.find_absent(0, 32).0, None, "limit");
        // A frame in use as a page table stays; a plain one goes.
        mmu.pin(&m, &mut log, 5, 1).unwrap();
        assert_eq!(mmu.depopulate(5), Err(-EINVAL));
        mmu.depopulate(6).unwrap();
        assert_eq!(mmu.depopulate(6), Err(-EINVAL));
        assert_eq!(mmu.find_absent(0, 64).0, Some(6));
        assert_eq!(mmu.populated(), 32 + 4 - 1);
    }

    #[test]
    fn self_reference_at_wrong_level_is_refused() {
        let (m, mut mmu, mut log) = setup();
        m.write_u64(0x1000, 0x1000 | 0x67).unwrap();
        assert_eq!(mmu.pin(&m, &mut log, 1, 4), Err(-EINVAL));
        assert_eq!(mmu.type_of(1), PageType::None);
    }
}
