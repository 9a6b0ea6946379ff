//! A domain without KVM for unit tests of the Xen core and of backends:
//! vector-backed memory, a grant table, 2-level event channels, and a
//! platform that records what the domain asked of the monitor.

use std::sync::{Arc, Mutex};

use crate::cpuid::CpuidPolicy;
use crate::domain::{Domain, DomainLayout, Platform};
use crate::mem::{GuestMem, VecMem};
use crate::mmu::Mmu;
use crate::time::{Clock, TimeScale};

/// Records kicks and backend notifications.
#[derive(Default)]
pub struct TestPlatform {
    pub kicks: Mutex<Vec<u32>>,
    pub notified: Mutex<Vec<(u32, u32)>>,
    /// Masks of the TLB flushes the Xen core asked for.
    pub flushes: Mutex<Vec<u64>>,
}

impl Platform for TestPlatform {
    fn console_write(&self, _data: &[u8]) {}
    fn kick(&self, vcpu: u32) {
        self.kicks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(vcpu);
    }
    fn tsc(&self) -> u64 {
        0
    }
    fn backend_notify(&self, backend: u32, port: u32) {
        self.notified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((backend, port));
    }
    fn flush_tlbs(&self, mask: u64) {
        self.flushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mask);
    }
}

/// Grant-table frames of a test domain.
pub const TEST_GRANT_FRAMES: u32 = 4;

/// A one-vCPU domain with `nr_pages` frames of RAM; shared_info and the
/// grant table follow RAM. Upcalls are unmasked on vCPU 0.
pub fn test_domain(nr_pages: u64) -> (Arc<Domain>, Arc<TestPlatform>) {
    test_domain_vcpus(nr_pages, 1)
}

/// As [`test_domain`], with `max_vcpus` vCPUs (only vCPU 0 online).
pub fn test_domain_vcpus(nr_pages: u64, max_vcpus: u32) -> (Arc<Domain>, Arc<TestPlatform>) {
    let mem: Arc<dyn GuestMem> = Arc::new(VecMem::new((test_mem_pages(nr_pages) * 4096) as usize));
    test_domain_with_mem(mem, nr_pages, max_vcpus)
}

/// Frames of guest memory a test domain with `nr_pages` of RAM needs.
pub fn test_mem_pages(nr_pages: u64) -> u64 {
    nr_pages + 1 + u64::from(TEST_GRANT_FRAMES)
}

/// As [`test_domain_vcpus`], on `mem` (at least [`test_mem_pages`] frames):
/// for tests that need a guest memory that acts (a hostile guest).
pub fn test_domain_with_mem(
    mem: Arc<dyn GuestMem>,
    nr_pages: u64,
    max_vcpus: u32,
) -> (Arc<Domain>, Arc<TestPlatform>) {
    let layout = DomainLayout {
        domid: 1,
        nr_pages,
        max_vcpus,
        shared_info_gpa: nr_pages * 4096,
        m2p_gpa: 0,
        m2p_entries: 0,
        m2p_va: 0,
        console_mfn: 0,
        console_port: 0,
        store_mfn: 0,
        store_port: 0,
        grant_gpa: (nr_pages + 1) * 4096,
        grant_frames: TEST_GRANT_FRAMES,
    };
    let platform = Arc::new(TestPlatform::default());
    let clock = Clock {
        tsc0: 0,
        scale: TimeScale::from_hz(1_000_000_000),
        tsc_khz: 1_000_000,
        wallclock_ns: 0,
    };
    let dom = Arc::new(Domain::new(
        mem,
        layout,
        Mmu::new(nr_pages),
        CpuidPolicy::pv_from_host(&[], 1_000_000),
        clock,
        platform.clone(),
    ));
    let _ = dom.mem.write_u8(
        dom.layout.shared_info_gpa + crate::abi::shinfo::UPCALL_MASK,
        0,
    );
    (dom, platform)
}

/// Write grant entry `gref`: permit `domid` to access `frame`.
pub fn grant(dom: &Domain, gref: u32, domid: u16, frame: u32, readonly: bool) {
    let mut flags = crate::grantmap::GTF_PERMIT_ACCESS;
    if readonly {
        flags |= crate::grantmap::GTF_READONLY;
    }
    let v = u64::from(flags) | (u64::from(domid) << 16) | (u64::from(frame) << 32);
    let _ = dom
        .mem
        .write_u64(dom.layout.grant_gpa + u64::from(gref) * 8, v);
}

/// Flags of grant entry `gref`.
pub fn grant_flags(dom: &Domain, gref: u32) -> u16 {
    dom.mem
        .read_u16(dom.layout.grant_gpa + u64::from(gref) * 8)
        .unwrap_or(0)
}

/// Unvalidated guest page tables for hypercall tests: frames 1-4 hold an
/// L4, L3, L2 and L1 that map virtual address `x` to guest-physical `x`,
/// writable, for the first `min(nr_pages, 512)` frames. Returns the root
/// MFN (1), to be used as a vCPU's `root_kernel`.
pub fn map_low_memory(dom: &Domain) -> u64 {
    let m = &*dom.mem;
    let rw = crate::abi::pte::P | crate::abi::pte::RW | crate::abi::pte::US;
    let _ = m.write_u64(0x1000, 0x2000 | rw);
    let _ = m.write_u64(0x2000, 0x3000 | rw);
    let _ = m.write_u64(0x3000, 0x4000 | rw);
    for pfn in 0..dom.layout.nr_pages.min(512) {
        let _ = m.write_u64(0x4000 + pfn * 8, (pfn << 12) | rw);
    }
    1
}
