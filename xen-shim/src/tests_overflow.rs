//! Issue 12 item 12: guest-chosen values at the ends of their ranges
//! (handles at the top of the address space, u64::MAX periods, LDTs that
//! wrap) are refused with Xen's error codes. Each of these panicked with
//! "attempt to add with overflow" in debug builds (or, in release builds,
//! wrapped around to low addresses) before the checks were added.

use crate::abi::{errno::*, hc, pte};
use crate::hypercall::dispatch;
use crate::testing::{map_low_memory, test_domain};
use crate::vcpu::{Action, PvVcpu};

fn vcpu() -> PvVcpu {
    let (dom, _) = test_domain(64);
    let mut v = PvVcpu::new(0, dom.clone());
    v.root_kernel = map_low_memory(&dom);
    v
}

fn call(v: &mut PvVcpu, nr: u64, a: [u64; 3]) -> i64 {
    let (rc, action) = dispatch(v, nr, [a[0], a[1], a[2], 0, 0, 0], false);
    assert_eq!(action, Action::Resume);
    rc
}

/// Map the last page of the address space (0xffff_ffff_ffff_f000) to
/// frame 43, writable, through frames 40-42.
fn map_top_page(v: &PvVcpu) {
    let m = &*v.dom.mem;
    let rw = pte::P | pte::RW | pte::US;
    m.write_u64((v.root_kernel << 12) + 511 * 8, 0x28000 | rw)
        .unwrap();
    m.write_u64(0x28000 + 511 * 8, 0x29000 | rw).unwrap();
    m.write_u64(0x29000 + 511 * 8, 0x2a000 | rw).unwrap();
    m.write_u64(0x2a000 + 511 * 8, 0x2b000 | rw).unwrap();
}

#[test]
fn event_channel_status_handle_at_the_top_is_efault() {
    let mut v = vcpu();
    assert_eq!(
        call(&mut v, hc::EVENT_CHANNEL_OP, [5, u64::MAX, 0]),
        -EFAULT
    );
}

#[test]
fn grant_table_handles_at_the_top_are_efault() {
    let mut v = vcpu();
    // GNTTABOP_query_size and GNTTABOP_get_version, count 1.
    assert_eq!(call(&mut v, hc::GRANT_TABLE_OP, [6, u64::MAX, 1]), -EFAULT);
    assert_eq!(call(&mut v, hc::GRANT_TABLE_OP, [10, u64::MAX, 1]), -EFAULT);
}

#[test]
fn memory_map_structure_crossing_the_top_is_efault() {
    let mut v = vcpu();
    map_top_page(&v);
    // xen_memory_map.nr_entries in the last 8 bytes; its buffer handle
    // would be past the end of the address space.
    let arg = 0xffff_ffff_ffff_fff8;
    v.dom.mem.write_u32(0x2b000 + 0xff8, 1).unwrap();
    assert_eq!(call(&mut v, hc::MEMORY_OP, [9, arg, 0]), -EFAULT);
}

#[test]
fn periodic_timer_period_beyond_stime_delta_max_is_einval() {
    let mut v = vcpu();
    v.dom.mem.write_u64(0x10000, u64::MAX).unwrap();
    assert_eq!(call(&mut v, hc::VCPU_OP, [6, 0, 0x10000]), -EINVAL);
    assert_eq!(v.periodic_ns, None);
    v.dom.mem.write_u64(0x10000, i64::MAX as u64).unwrap();
    assert_eq!(call(&mut v, hc::VCPU_OP, [6, 0, 0x10000]), 0);
    assert_eq!(v.periodic_next, Some(i64::MAX as u64));
}

#[test]
fn periodic_timer_expiry_saturates_at_the_end_of_time() {
    let mut v = vcpu();
    v.periodic_ns = Some(i64::MAX as u64);
    v.periodic_next = Some(u64::MAX - 5);
    assert_eq!(v.run_timers(u64::MAX), Some(u64::MAX));
}

/// An mmuext_op {cmd, arg1, arg2} at 0x10000, issued with count 1.
fn mmuext(v: &mut PvVcpu, cmd: u32, arg1: u64, arg2: u64) -> i64 {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&cmd.to_le_bytes());
    b[8..16].copy_from_slice(&arg1.to_le_bytes());
    b[16..24].copy_from_slice(&arg2.to_le_bytes());
    v.dom.mem.write(0x10000, &b).unwrap();
    call(v, hc::MMUEXT_OP, [0x10000, 1, 0])
}

#[test]
fn ldt_that_wraps_or_enters_the_hypervisor_hole_is_einval() {
    let mut v = vcpu();
    const SET_LDT: u32 = 13;
    assert_eq!(
        mmuext(&mut v, SET_LDT, 0xffff_ffff_ffff_f000, 8192),
        -EINVAL
    );
    assert_eq!(mmuext(&mut v, SET_LDT, 0xffff_8000_0000_0000, 1), -EINVAL);
    assert_eq!(mmuext(&mut v, SET_LDT, 0x0000_8000_0000_0000, 1), -EINVAL);
    assert_eq!(v.ldt_ents, 0);
    assert_eq!(mmuext(&mut v, SET_LDT, 0x20000, 8192), 0);
    assert_eq!((v.ldt_base, v.ldt_ents), (0x20000, 8192));
}

#[test]
fn ldt_lookup_near_the_top_does_not_wrap() {
    let mut v = vcpu();
    // As a context from before the checks could have left it.
    v.ldt_base = 0xffff_ffff_ffff_f000;
    v.ldt_ents = 8192;
    let sel = (8000 << 3) | 4 | 3;
    assert_eq!(crate::descriptors::set_segment_base(&mut v, 3, sel), Ok(0));
    assert_eq!(v.gs_base_user, 0);
}

#[test]
fn initial_context_with_a_wrapping_ldt_is_einval() {
    let mut v = vcpu();
    let ctx = crate::vcpu::BootContext {
        cr3: 5,
        ldt_base: 0xffff_ffff_ffff_f000,
        ldt_ents: 8192,
        traps: vec![Default::default(); 256],
        ..Default::default()
    };
    assert_eq!(crate::vcpuctx::apply_context(&mut v, &ctx), Err(-EINVAL));
    assert_eq!(v.dom.mmu.lock().unwrap().type_count(5), 0);
}
