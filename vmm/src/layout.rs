//! Guest-physical and virtual layout of the monitor area.
//!
//! Guest RAM is `[0, ram)`. Above it (2 MiB aligned) lies the monitor area:
//! shared_info, the page tables for the reserved L4 slots, the read-only M2P
//! table, and the ring-0 area (IDT, entry stubs, per-vCPU GDT/TSS/stack and
//! return code). Guests can never map these frames (page-type validation).

pub const PAGE: u64 = 4096;
/// Grant-table frames offered to each guest (v1: 512 entries per frame).
pub const GRANT_FRAMES: u32 = 32;
/// L4 slot of the read-only M2P. Xen uses slot 256, but PVM-style KVM hosts
/// reserve that slot for themselves (a guest mapping there never becomes
/// visible), so the M2P lives in slot 258; guests learn its address from
/// XENMEM_machphys_mapping, as Linux does.
pub const SLOT_M2P: usize = 258;
pub const M2P_VA: u64 = 0xffff_8100_0000_0000;
/// L4 slot of the ring-0 area.
pub const SLOT_RING0: usize = 257;
/// L4 slot of the ring-0 direct map of guest memory (Xen's slot 262+).
pub const SLOT_DIRECTMAP: usize = 262;
pub const RING0_VA: u64 = 0xffff_8080_0000_0000;
pub const DIRECTMAP_VA: u64 = 0xffff_8300_0000_0000;

/// Ring-0 area page indices.
pub const R0_IDT: u64 = 0;
pub const R0_STUBS: u64 = 1;
/// The domain's shared_info page, for the ring-0 fast paths (vcpu_info of
/// vCPUs that have not registered their own).
pub const R0_SHINFO: u64 = 2;
pub const R0_PER_VCPU: u64 = 16;
pub const R0_VCPU_PAGES: u64 = 32;
pub const GDT_PAGES: u64 = 15;
pub const R0_TSS: u64 = 15;
pub const R0_STACK: u64 = 16;
pub const R0_STACK_PAGES: u64 = 4;
pub const R0_JIT: u64 = 20;
pub const R0_JIT_PAGES: u64 = 4;
/// A separate stack for NMI, #DF and #MC (TSS IST1) on hardware hosts, where
/// the SYSCALL stub runs in ring 0 on the guest's own stack until it exits.
pub const R0_IST: u64 = 24;
pub const R0_IST_PAGES: u64 = 1;
/// The SYSCALL entry with the ring-0 fast paths (hardware hosts), and its
/// data page right after it (crate::ring0_fast).
pub const R0_FAST_CODE: u64 = 25;
/// A stack for #SS, #GP and #PF (TSS IST2) where the fast paths run: a
/// fault there happens on the guest's stack, which may be the cause.
pub const R0_IST2: u64 = 27;
pub const R0_IST2_PAGES: u64 = 1;
/// The vCPU's own IDT: the shared one, except that with the ring-0 fast
/// paths vector 14 enters that vCPU's #PF bounce (crate::ring0_fast).
pub const R0_VCPU_IDT: u64 = 28;
pub const MAX_VCPUS: u32 = ((512 - R0_PER_VCPU) / R0_VCPU_PAGES) as u32;

/// Exit ports used by the entry stubs.
pub const PORT_SYSCALL: u16 = 0xf0;
pub const PORT_JIT_CONTINUE: u16 = 0xf1;
pub const PORT_SPURIOUS: u16 = 0xf2;
/// The interrupt the monitor injects to interrupt a running guest at an
/// instruction boundary (to deliver an event upcall), and its exit port.
pub const UPCALL_VECTOR: u8 = 0xf0;
pub const PORT_UPCALL: u16 = 0xf3;
/// Exception vector v (0..32) exits on port v; int 0x80 on 0x80.
pub const STUB_SYSCALL_OFF: u64 = 0;
pub const STUB_SPURIOUS_OFF: u64 = 8;
pub const STUB_UPCALL_OFF: u64 = 12;
/// `syscall; ud2`, run from ring 3 by the host probe (crate::host_profile).
pub const STUB_PROBE_OFF: u64 = 0x800;
pub fn stub_vector_off(v: u8) -> u64 {
    16 + u64::from(v) * 4
}

#[derive(Debug, Clone)]
pub struct MonitorLayout {
    pub ram: u64,
    pub base: u64,
    pub shared_info: u64,
    pub r0_l3: u64,
    pub r0_l2: u64,
    pub r0_l1: u64,
    pub m2p_l3: u64,
    pub dm_l3: u64,
    pub dm_l2: u64,
    pub dm_l2_count: u64,
    pub m2p_l2: u64,
    pub m2p_l2_count: u64,
    pub m2p_l1: u64,
    pub m2p_l1_count: u64,
    pub m2p: u64,
    pub m2p_pages: u64,
    pub ring0: u64,
    pub grant: u64,
    pub end: u64,
}

impl MonitorLayout {
    pub fn new(ram: u64) -> MonitorLayout {
        let base = ram.div_ceil(2 << 20) * (2 << 20);
        let nr_frames = ram / PAGE;
        let m2p_pages = (nr_frames * 8).div_ceil(PAGE);
        let m2p_l1_count = m2p_pages.div_ceil(512);
        let m2p_l2_count = m2p_l1_count.div_ceil(512);
        let dm_l2_count = ram.div_ceil(1 << 30);
        let mut next = base;
        let mut take = |n: u64| {
            let a = next;
            next += n * PAGE;
            a
        };
        let shared_info = take(1);
        let r0_l3 = take(1);
        let r0_l2 = take(1);
        let r0_l1 = take(1);
        let m2p_l3 = take(1);
        let dm_l3 = take(1);
        let dm_l2 = take(dm_l2_count);
        let m2p_l2 = take(m2p_l2_count);
        let m2p_l1 = take(m2p_l1_count);
        let m2p = take(m2p_pages);
        let ring0 = take(512);
        let grant = take(GRANT_FRAMES.into());
        MonitorLayout {
            ram,
            base,
            shared_info,
            r0_l3,
            r0_l2,
            r0_l1,
            m2p_l3,
            dm_l3,
            dm_l2,
            dm_l2_count,
            m2p_l2,
            m2p_l2_count,
            m2p_l1,
            m2p_l1_count,
            m2p,
            m2p_pages,
            ring0,
            grant,
            end: next,
        }
    }

    /// Guest-physical address of ring-0 page `idx`, and its virtual address.
    pub fn r0_gpa(&self, idx: u64) -> u64 {
        self.ring0 + idx * PAGE
    }
    pub fn r0_va(idx: u64) -> u64 {
        RING0_VA + idx * PAGE
    }
    pub fn vcpu_page(v: u32, off: u64) -> u64 {
        R0_PER_VCPU + u64::from(v) * R0_VCPU_PAGES + off
    }
}
