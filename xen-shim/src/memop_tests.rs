//! Unit tests of the reservation ops (no /dev/kvm).

use super::*;
use crate::abi::hc;
use crate::regs::Regs;
use crate::testing::{map_low_memory, test_domain};
use crate::vcpu::{Action, PvVcpu};
use std::sync::atomic::Ordering;

/// Where the tests put the reservation struct and the extent list.
const RES: u64 = 0x7f000;
const LIST: u64 = 0x80000;

/// A vCPU of a `nr_pages` domain whose frames from `boot` are unpopulated.
fn vcpu(nr_pages: u64, boot: u64) -> PvVcpu {
    let (dom, _) = test_domain(nr_pages);
    dom.mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_unpopulated_from(boot);
    let mut v = PvVcpu::new(0, dom.clone());
    v.root_kernel = map_low_memory(&dom);
    v
}

fn reservation(v: &PvVcpu, list: u64, nr: u64, order: u32, flags: u32, domid: u16) {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&list.to_le_bytes());
    b[8..16].copy_from_slice(&nr.to_le_bytes());
    b[16..20].copy_from_slice(&order.to_le_bytes());
    b[20..24].copy_from_slice(&flags.to_le_bytes());
    b[24..26].copy_from_slice(&domid.to_le_bytes());
    v.dom.mem.write(RES, &b).unwrap();
}

fn set_list(v: &PvVcpu, frames: impl Iterator<Item = u64>) {
    let b: Vec<u8> = frames.flat_map(|f| f.to_le_bytes()).collect();
    v.dom.mem.write(LIST, &b).unwrap();
}

fn list(v: &PvVcpu, i: u64) -> u64 {
    v.dom.mem.read_u64(LIST + i * 8).unwrap()
}

const SELF: u16 = DOMID_SELF as u16;

fn op(v: &mut PvVcpu, op: u64) -> i64 {
    v.continuation = None;
    memory_op(v, op, RES).unwrap_or_else(|e| e)
}

fn populated(v: &PvVcpu) -> u64 {
    current_pages(v)
}

fn query(v: &mut PvVcpu, cmd: u64, domid: u16) -> i64 {
    v.dom.mem.write(RES, &domid.to_le_bytes()).unwrap();
    op(v, cmd)
}

#[test]
fn reservations_report_populated_and_max() {
    let mut v = vcpu(512, 256);
    assert_eq!(query(&mut v, XENMEM_CURRENT_RESERVATION, SELF), 256);
    assert_eq!(query(&mut v, XENMEM_MAXIMUM_RESERVATION, SELF), 512);
    assert_eq!(query(&mut v, XENMEM_CURRENT_RESERVATION, 1), 256);
    assert_eq!(query(&mut v, XENMEM_CURRENT_RESERVATION, 0), -EPERM);
    assert_eq!(query(&mut v, XENMEM_MAXIMUM_RESERVATION, 9), -ESRCH);
    v.dom.max_pages.store(300, Ordering::SeqCst);
    assert_eq!(query(&mut v, XENMEM_MAXIMUM_RESERVATION, SELF), 300);
    assert_eq!(op(&mut v, XENMEM_GET_POD_TARGET), -EINVAL);
    assert_eq!(
        memory_op(&mut v, XENMEM_CURRENT_RESERVATION, u64::MAX),
        Err(-EFAULT)
    );
}

#[test]
fn memory_map_covers_the_region_up_to_maxmem() {
    let mut v = vcpu(512, 256);
    v.dom.mem.write_u32(RES, 8).unwrap();
    v.dom.mem.write_u64(RES + 8, LIST).unwrap();
    assert_eq!(op(&mut v, XENMEM_MEMORY_MAP), 0);
    assert_eq!(v.dom.mem.read_u32(RES).unwrap(), 1);
    assert_eq!(v.dom.mem.read_u64(LIST).unwrap(), 0);
    assert_eq!(v.dom.mem.read_u64(LIST + 8).unwrap(), 512 * 4096);
    assert_eq!(v.dom.mem.read_u32(LIST + 16).unwrap(), 1);
}

#[test]
fn decrease_gives_frames_back_and_they_cannot_be_mapped() {
    let mut v = vcpu(512, 512);
    v.dom.mem.write_u64(300 << 12, 0xdead).unwrap();
    set_list(&v, 300..310);
    reservation(&v, LIST, 10, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_DECREASE_RESERVATION), 10);
    assert_eq!(populated(&v), 502);
    assert_eq!(
        v.dom.mem.read_u64(300 << 12).unwrap(),
        0,
        "contents dropped"
    );
    {
        let dom = v.dom.clone();
        let mut mmu = dom.mmu.lock().unwrap();
        assert!(!mmu.is_ram(300));
        // Neither mapped nor used as a page table.
        let mut log = Vec::new();
        let rw = crate::abi::pte::P | crate::abi::pte::RW;
        assert_eq!(
            mmu.get_entry_refs(&*dom.mem, &mut log, 1, (300 << 12) | rw),
            Err(-EINVAL)
        );
        assert_eq!(
            mmu.get_entry_refs(&*dom.mem, &mut log, 1, (300 << 12) | 1),
            Err(-EINVAL)
        );
        assert_eq!(mmu.pin(&*dom.mem, &mut log, 301, 1), Err(-EINVAL));
    }
    // Giving an absent frame back again fails at that extent.
    set_list(&v, [311, 300].into_iter());
    reservation(&v, LIST, 2, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_DECREASE_RESERVATION), 1);
    assert_eq!(populated(&v), 501);
}

#[test]
fn populate_prefers_the_gpfn_and_stops_at_max_pages() {
    let mut v = vcpu(512, 256);
    v.dom.max_pages.store(260, Ordering::SeqCst);
    set_list(&v, 300..310);
    reservation(&v, LIST, 10, 0, 0, SELF);
    assert_eq!(
        op(&mut v, XENMEM_POPULATE_PHYSMAP),
        4,
        "256 + 4 = max_pages"
    );
    assert_eq!(
        (0..4).map(|i| list(&v, i)).collect::<Vec<_>>(),
        [300, 301, 302, 303]
    );
    assert_eq!(list(&v, 4), 304, "not done: left as it was");
    assert!(v.dom.mmu.lock().unwrap().is_ram(303));
    v.dom.max_pages.store(512, Ordering::SeqCst);
    // A gpfn whose frame is taken gets the lowest free one.
    set_list(&v, [300].into_iter());
    reservation(&v, LIST, 1, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_POPULATE_PHYSMAP), 1);
    assert_eq!(list(&v, 0), 256);
    // Order 2: aligned, four frames.
    set_list(&v, [400].into_iter());
    reservation(&v, LIST, 1, 2, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_POPULATE_PHYSMAP), 1);
    assert_eq!(list(&v, 0), 400);
    assert_eq!(populated(&v), 256 + 4 + 1 + 4);
    // increase_reservation: any frames, reported; a null list is allowed.
    set_list(&v, [0, 0].into_iter());
    reservation(&v, LIST, 2, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_INCREASE_RESERVATION), 2);
    assert_eq!([list(&v, 0), list(&v, 1)], [257, 258]);
    reservation(&v, 0, 3, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_INCREASE_RESERVATION), 3);
    assert_eq!(populated(&v), 256 + 4 + 1 + 4 + 5);
}

#[test]
fn hostile_reservations_are_refused() {
    let mut v = vcpu(512, 256);
    set_list(&v, 300..301);
    // Order above the domU limit, populate-on-demand, too many extents.
    reservation(&v, LIST, 1, MAX_EXTENT_ORDER + 1, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_POPULATE_PHYSMAP), 0);
    reservation(&v, LIST, 1, 0, 1 << 16, SELF);
    assert_eq!(op(&mut v, XENMEM_POPULATE_PHYSMAP), 0);
    reservation(&v, LIST, 1 << 40, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_POPULATE_PHYSMAP), 0);
    // A list that wraps, one that is not mapped (EFAULT: nothing done).
    reservation(&v, u64::MAX - 7, 4, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_DECREASE_RESERVATION), 0);
    reservation(&v, 0x4000_0000, 4, 0, 0, SELF);
    assert_eq!(op(&mut v, XENMEM_POPULATE_PHYSMAP), 0);
    // The struct itself unreadable: the start extent is returned.
    assert_eq!(
        memory_op(&mut v, XENMEM_POPULATE_PHYSMAP | (3 << 6), 1 << 40),
        Ok(3)
    );
    // Start beyond the list.
    reservation(&v, LIST, 1, 0, 0, SELF);
    assert_eq!(
        memory_op(&mut v, XENMEM_POPULATE_PHYSMAP | (5 << 6), RES),
        Ok(5)
    );
    // Other domains.
    reservation(&v, LIST, 1, 0, 0, 0);
    assert_eq!(op(&mut v, XENMEM_DECREASE_RESERVATION), -EPERM);
    reservation(&v, LIST, 1, 0, 0, 7);
    assert_eq!(op(&mut v, XENMEM_DECREASE_RESERVATION), 0);
    // Frames outside the region, wrapping extents, the page tables in use.
    let dom = v.dom.clone();
    dom.mmu
        .lock()
        .unwrap()
        .pin(&*dom.mem, &mut Vec::new(), 5, 1)
        .unwrap();
    for (gmfn, order) in [(512, 0), (u64::MAX, 1), (5, 0), (256, 0)] {
        set_list(&v, [gmfn].into_iter());
        reservation(&v, LIST, 1, order, 0, SELF);
        assert_eq!(op(&mut v, XENMEM_DECREASE_RESERVATION), 0, "gmfn {gmfn:#x}");
    }
    // Address bits: nothing free below 1 MiB.
    reservation(&v, LIST, 1, 0, 20, SELF);
    assert_eq!(op(&mut v, XENMEM_INCREASE_RESERVATION), 0);
    assert_eq!(populated(&v), 256);
}

/// A long list is done in bounded batches through continuations (the
/// progress in the high bits of cmd), as Xen preempts it.
#[test]
fn long_lists_are_preempted_and_continued() {
    let nr = 12_000u64;
    let mut v = vcpu(16_384, 16_384);
    set_list(&v, 1000..1000 + nr);
    reservation(&v, LIST, nr, 0, 0, SELF);
    let mut regs = Regs {
        rax: hc::MEMORY_OP,
        rdi: XENMEM_DECREASE_RESERVATION,
        rsi: RES,
        ..Default::default()
    };
    let mut entries = 0;
    loop {
        entries += 1;
        regs.rcx = 0x1002;
        regs.r11 = 0x202;
        assert_eq!(
            crate::hypercall::hypercall(&mut v, &mut regs),
            Action::Resume
        );
        if regs.rip == 0x1002 {
            break;
        }
        assert_eq!(regs.rip, 0x1000);
        assert!(entries < 100);
    }
    assert_eq!(regs.rax, nr);
    assert!(entries >= 3, "{entries} entries");
    assert_eq!(populated(&v), 16_384 - nr);
}
