//! XENMEM_* (HYPERVISOR_memory_op) for a PV domain: the reservation ops of
//! Xen's common/memory.c (increase/decrease reservation, populate_physmap)
//! and the queries a PV kernel makes at boot and from its balloon driver.
//!
//! The domain's RAM region is sized for `maxmem` (`layout.nr_pages`
//! frames); the frames populated at any time (`Mmu::populated`, Xen's
//! tot_pages) are at most `Domain::max_pages`. A frame handed back is given
//! back to the host (`GuestMem::discard`) and becomes unpopulated: mapping
//! it, typing it or granting it fails until it is populated again.
//!
//! The P2M starts as the identity; a populated gpfn gets its own frame when
//! that frame is free (so a guest that gives back and takes again keeps its
//! layout), else the lowest free frame, and the M2P records the gpfn.

use crate::abi::{errno::*, DOMID_SELF};
use crate::vcpu::{field, PvVcpu};

pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
pub const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_MEMORY_MAP: u64 = 9;
pub const XENMEM_MACHPHYS_MAPPING: u64 = 12;
pub const XENMEM_SET_POD_TARGET: u64 = 16;
pub const XENMEM_GET_POD_TARGET: u64 = 17;

/// The low bits of `cmd` are the op; the rest is where a preempted
/// reservation op continues (Xen's MEMOP_EXTENT_SHIFT / MEMOP_CMD_MASK).
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;
/// The largest extent a domU may ask for (Xen's default domU max order).
pub const MAX_EXTENT_ORDER: u32 = 9;
/// Frames handled (or scanned, 64 to a unit) in one entry of a reservation
/// op before it preempts itself and continues through a continuation.
pub const PREEMPT_WORK: u64 = 4096;
/// M2P value of a frame that holds no gpfn.
pub const INVALID_M2P: u64 = u64::MAX;
const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
const DOMID_ZERO: u64 = 0;

/// HYPERVISOR_memory_op(cmd, arg).
pub fn memory_op(v: &mut PvVcpu, cmd: u64, arg: u64) -> Result<i64, i64> {
    let op = cmd & MEMOP_CMD_MASK;
    match op {
        XENMEM_INCREASE_RESERVATION | XENMEM_DECREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP => {
            Ok(reservation_op(v, op, cmd >> MEMOP_EXTENT_SHIFT, arg))
        }
        XENMEM_MAXIMUM_RAM_PAGE => Ok(v.dom.layout.nr_pages as i64),
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION => {
            let mut b = [0u8; 2];
            v.copy_from(arg, &mut b)?;
            self_domain(v, u64::from(u16::from_le_bytes(b)))?;
            Ok(if op == XENMEM_CURRENT_RESERVATION {
                current_pages(v) as i64
            } else {
                v.dom.max_pages.load(std::sync::atomic::Ordering::SeqCst) as i64
            })
        }
        XENMEM_MEMORY_MAP => memory_map(v, arg),
        XENMEM_MACHPHYS_MAPPING => {
            let mut b = [0u8; 24];
            let start = v.dom.layout.m2p_va;
            let end = start + (v.dom.layout.m2p_entries * 8).div_ceil(1 << 21) * (1 << 21);
            b[..8].copy_from_slice(&start.to_le_bytes());
            b[8..16].copy_from_slice(&end.to_le_bytes());
            let max_mfn = v.dom.layout.m2p_entries.saturating_sub(1);
            b[16..24].copy_from_slice(&max_mfn.to_le_bytes());
            v.copy_to(arg, &b)?;
            Ok(0)
        }
        // Populate-on-demand is for HVM domains; Xen refuses it for PV.
        XENMEM_SET_POD_TARGET | XENMEM_GET_POD_TARGET => Err(-EINVAL),
        _ => {
            v.dom.log_once("unimplemented memory_op", op, || {
                format!("unimplemented memory_op {op} -> -ENOSYS")
            });
            Err(-ENOSYS)
        }
    }
}

/// The domain's populated frames (Xen's tot_pages).
pub fn current_pages(v: &PvVcpu) -> u64 {
    v.dom
        .mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .populated()
}

/// Whether `domid` names the calling domain: another one is -EPERM for
/// Domain-0 (it exists, the guest may not act on it) and -ESRCH otherwise.
fn self_domain(v: &PvVcpu, domid: u64) -> Result<(), i64> {
    if domid == DOMID_SELF || domid == u64::from(v.dom.layout.domid) {
        Ok(())
    } else if domid == DOMID_ZERO {
        Err(-EPERM)
    } else {
        Err(-ESRCH)
    }
}

/// XENMEM_memory_map: one RAM region covering the whole region up to
/// maxmem, as libxl sets for a PV domain (xc_domain_set_memmap_limit): a
/// Linux guest treats the RAM above `nr_pages` of start_info as room for
/// its balloon (xen_extra_mem).
fn memory_map(v: &mut PvVcpu, arg: u64) -> Result<i64, i64> {
    let nr = v.read_u32(arg)?;
    if nr < 1 {
        return Err(-EINVAL);
    }
    let buf = v.read_u64(field(arg, 8)?)?;
    let mut e = [0u8; 20];
    e[8..16].copy_from_slice(&(v.dom.layout.nr_pages * 4096).to_le_bytes());
    e[16..20].copy_from_slice(&1u32.to_le_bytes());
    v.copy_to(buf, &e)?;
    v.copy_to(arg, &1u32.to_le_bytes())?;
    Ok(0)
}

/// struct xen_memory_reservation (64-bit).
struct Reservation {
    list: u64,
    nr_extents: u64,
    order: u32,
    flags: u32,
    domid: u64,
}

fn read_reservation(v: &PvVcpu, arg: u64) -> Result<Reservation, i64> {
    let mut b = [0u8; 32];
    v.copy_from(arg, &mut b)?;
    let w = |k: usize| u64::from_le_bytes(b[k..k + 8].try_into().unwrap_or([0; 8]));
    let d = |k: usize| u32::from_le_bytes(b[k..k + 4].try_into().unwrap_or([0; 4]));
    Ok(Reservation {
        list: w(0),
        nr_extents: w(8),
        order: d(16),
        flags: d(20),
        domid: u64::from(u16::from_le_bytes([b[24], b[25]])),
    })
}

/// Increase/decrease reservation and populate_physmap, from extent
/// `start`. Returns the extents done (Xen's nr_done); when preempted,
/// sets the vCPU's continuation with the progress in the high bits of cmd.
fn reservation_op(v: &mut PvVcpu, op: u64, start: u64, arg: u64) -> i64 {
    let done = |n: u64| n as i64;
    let Ok(r) = read_reservation(v, arg) else {
        return done(start);
    };
    if r.nr_extents > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= r.nr_extents {
        return done(start);
    }
    // The whole list must be addressable (guest_handle_subrange_okay).
    if r.list != 0 && r.list.checked_add(r.nr_extents * 8).is_none() {
        return done(start);
    }
    match self_domain(v, r.domid) {
        Ok(()) => {}
        Err(e) if e == -EPERM => return e,
        Err(_) => return done(start),
    }
    if r.order > MAX_EXTENT_ORDER {
        return done(start);
    }
    if op == XENMEM_POPULATE_PHYSMAP && r.flags & XENMEMF_POPULATE_ON_DEMAND != 0 {
        return done(start);
    }
    let nr_frames = v.dom.layout.nr_pages;
    // XENMEMF_address_bits: frames must lie below 2^bits.
    let limit = match r.flags & 0xff {
        0 => nr_frames,
        bits if bits <= 12 => 0,
        bits if bits >= 64 => nr_frames,
        bits => (1u64 << (bits - 12)).min(nr_frames),
    };
    let mut work = 0u64;
    for i in start..r.nr_extents {
        if i != start && work >= PREEMPT_WORK {
            v.continuation = Some([op | (i << MEMOP_EXTENT_SHIFT), arg, 0, 0, 0, 0]);
            return done(i);
        }
        let slot = r.list.wrapping_add(i * 8);
        let ok = match op {
            XENMEM_DECREASE_RESERVATION => decrease_one(v, slot, r.order, &mut work),
            _ => populate_one(v, op, r.list != 0, slot, r.order, limit, &mut work),
        };
        if !ok {
            return done(i);
        }
    }
    done(r.nr_extents)
}

/// Hand back the extent at `slot` (a gmfn, which is the mfn for PV).
fn decrease_one(v: &mut PvVcpu, slot: u64, order: u32, work: &mut u64) -> bool {
    let Ok(gmfn) = v.read_u64(slot) else {
        return false;
    };
    let dom = v.dom.clone();
    let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
    for j in 0..1u64 << order {
        let Some(mfn) = gmfn.checked_add(j) else {
            return false;
        };
        if let Err(e) = mmu.depopulate(mfn) {
            dom.log_once("decrease_reservation refused", 0, || {
                format!("decrease_reservation: frame {mfn:#x} refused ({e})")
            });
            return false;
        }
        set_m2p(&dom, mfn, INVALID_M2P);
        if dom.mem.discard(mfn << 12, 4096).is_err() {
            log::warn!("decrease_reservation: frame {mfn:#x} not given back to the host");
        }
        *work += 1;
    }
    true
}

/// Record `gpfn` for `mfn` in the monitor's read-only M2P.
fn set_m2p(dom: &crate::domain::Domain, mfn: u64, gpfn: u64) {
    if mfn < dom.layout.m2p_entries {
        let _ = dom.mem.write_u64(dom.layout.m2p_gpa + mfn * 8, gpfn);
    }
}

/// Give the domain one extent: populate_physmap reads the gpfn at `slot`
/// and records it in the M2P; both ops write the frame given back to it.
fn populate_one(
    v: &mut PvVcpu,
    op: u64,
    has_list: bool,
    slot: u64,
    order: u32,
    limit: u64,
    work: &mut u64,
) -> bool {
    let gpfn = if op == XENMEM_POPULATE_PHYSMAP {
        match v.read_u64(slot) {
            Ok(g) => Some(g),
            Err(_) => return false,
        }
    } else {
        None
    };
    let dom = v.dom.clone();
    let n = 1u64 << order;
    let mfn = {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        let max = dom.max_pages.load(std::sync::atomic::Ordering::SeqCst);
        if mmu.populated() + n > max {
            dom.log_once("reservation over max_pages", 0, || {
                format!(
                    "memory_op: over-allocation ({} + {n} > {max} frames)",
                    mmu.populated()
                )
            });
            return false;
        }
        let own = gpfn.filter(|&g| {
            g.is_multiple_of(n)
                && g.checked_add(n).is_some_and(|e| e <= limit)
                && mmu.range_absent(g, order)
        });
        let mfn = match own {
            Some(g) => g,
            None => {
                let (found, scanned) = mmu.find_absent(order, limit);
                *work += scanned / 64;
                match found {
                    Some(m) => m,
                    None => return false,
                }
            }
        };
        if mmu.populate(mfn, order).is_err() {
            return false;
        }
        mfn
    };
    *work += n;
    for j in 0..n {
        let m2p = gpfn.map_or(INVALID_M2P, |g| g.wrapping_add(j));
        set_m2p(&dom, mfn + j, m2p);
    }
    // Xen keeps the extent allocated when the copy back fails.
    !has_list || v.copy_to(slot, &mfn.to_le_bytes()).is_ok()
}

#[cfg(test)]
#[path = "memop_tests.rs"]
mod tests;
