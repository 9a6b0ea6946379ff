//! PV MMU hypercalls: mmu_update, mmuext_op, update_va_mapping.

use crate::abi::{errno::*, DOMID_SELF};
use crate::mmu::{write_pt, PageType};
use crate::vcpu::{Flush, PvVcpu};

const MMU_NORMAL_PT_UPDATE: u64 = 0;
const MMU_MACHPHYS_UPDATE: u64 = 1;
const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;

fn check_foreign(dom: u64) -> Result<(), i64> {
    if dom == DOMID_SELF || dom == 0 {
        Ok(())
    } else {
        Err(-ESRCH)
    }
}

pub fn mmu_update(
    v: &mut PvVcpu,
    reqs: u64,
    count: u64,
    pdone: u64,
    foreign: u64,
) -> Result<i64, i64> {
    let dom = v.dom.clone();
    batch(v, reqs, count, pdone, foreign, |v, b: &[u8; 16]| {
        let ptr = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
        let val = u64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
        let r = match ptr & 3 {
            MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_PRESERVE_AD => {
                let addr = ptr & !7;
                let mfn = addr >> 12;
                let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                match mmu.type_of(mfn) {
                    PageType::L1 | PageType::L2 | PageType::L3 | PageType::L4 => mmu.mod_entry(
                        &*dom.mem,
                        &mut v.pt_log,
                        mfn,
                        (addr & 0xfff) / 8,
                        val,
                        ptr & 3 == MMU_PT_UPDATE_PRESERVE_AD,
                    ),
                    PageType::Desc => Err(-EINVAL),
                    _ if mmu.is_ram(mfn) => write_pt(&*dom.mem, &mut v.pt_log, addr, val),
                    _ => Err(-EINVAL),
                }
            }
            MMU_MACHPHYS_UPDATE => {
                let mfn = ptr >> 12;
                let owned = dom
                    .mmu
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_ram(mfn);
                if !owned || mfn >= dom.layout.nr_pages {
                    Err(-EINVAL)
                } else {
                    dom.mem
                        .write_u64(dom.layout.m2p_gpa + mfn * 8, val)
                        .map_err(|_| -EFAULT)
                }
            }
            _ => Err(-ENOSYS),
        };
        r.inspect_err(|e| log::debug!("mmu_update ptr {ptr:#x} val {val:#x}: {e}"))
    })
}

pub fn update_va_mapping(v: &mut PvVcpu, va: u64, val: u64, flags: u64) -> Result<i64, i64> {
    let dom = v.dom.clone();
    // The L1 entry for `va` under the current kernel root.
    let mut table = v.root_kernel << 12;
    for level in (2..=4u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 511;
        let e = dom.mem.read_u64(table + idx * 8).map_err(|_| -EFAULT)?;
        if e & 1 == 0 {
            return Err(-EINVAL);
        }
        table = e & crate::abi::pte::ADDR_MASK;
    }
    let l1 = table >> 12;
    {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        if mmu.type_of(l1) != PageType::L1 {
            return Err(-EINVAL);
        }
        mmu.mod_entry(&*dom.mem, &mut v.pt_log, l1, (va >> 12) & 511, val, false)?;
    }
    match flags & 3 {
        1 => v.flush = Flush::All,
        2 => v.flush.add_page(va),
        _ => {}
    }
    match flags & !3 {
        0 => {}
        4 => v.remote_flush |= all_others(v),
        mask_va => v.remote_flush |= v.read_u64(mask_va).unwrap_or(u64::MAX) & all_others(v),
    }
    Ok(0)
}

pub fn mmuext_op(
    v: &mut PvVcpu,
    ops: u64,
    count: u64,
    pdone: u64,
    foreign: u64,
) -> Result<i64, i64> {
    let dom = v.dom.clone();
    batch(v, ops, count, pdone, foreign, |v, b: &[u8; 24]| {
        let cmd = u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4]));
        let arg1 = u64::from_le_bytes(b[8..16].try_into().unwrap_or([0; 8]));
        let arg2 = u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8]));
        let r: Result<(), i64> = match cmd {
            0..=3 => {
                let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                mmu.pin(&*dom.mem, &mut v.pt_log, arg1, cmd as u8 + 1)
            }
            4 => {
                let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                mmu.unpin(&*dom.mem, arg1)
            }
            5 => crate::hypercall::new_baseptr(v, arg1).map(|_| ()),
            6 | 8 | 10 => {
                v.flush = Flush::All;
                v.remote_flush |= remote_mask(v, cmd, arg2);
                Ok(())
            }
            7 | 9 | 11 => {
                v.flush.add_page(arg1);
                v.remote_flush |= remote_mask(v, cmd, arg2);
                Ok(())
            }
            12 | 18 => Err(-EPERM),
            13 => {
                // Xen: page-aligned, at most 8192 entries, a guest range.
                if arg1 & 0xfff != 0 || arg2 > 8192 || !crate::guestva::range_ok(arg1, arg2 * 8) {
                    Err(-EINVAL)
                } else {
                    v.ldt_base = arg1;
                    v.ldt_ents = arg2 as u32;
                    v.gdt_dirty = true;
                    Ok(())
                }
            }
            15 => {
                if arg1 == 0 {
                    let old = std::mem::take(&mut v.root_user);
                    if old != 0 {
                        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                        mmu.put_type(&*dom.mem, old);
                    }
                    Ok(())
                } else {
                    let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                    mmu.get_type(&*dom.mem, &mut v.pt_log, arg1, PageType::L4)
                        .map(|()| {
                            if v.root_user != 0 {
                                mmu.put_type(&*dom.mem, v.root_user);
                            }
                            v.root_user = arg1;
                        })
                }
            }
            16 => {
                // CLEAR_PAGE
                let mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                if !mmu.is_ram(arg1)
                    || mmu.type_of(arg1) != PageType::None
                        && mmu.type_of(arg1) != PageType::Writable
                {
                    Err(-EINVAL)
                } else {
                    dom.mem.write(arg1 << 12, &[0u8; 4096]).map_err(|_| -EFAULT)
                }
            }
            17 => {
                let mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                let ok = |m| {
                    mmu.is_ram(m) && matches!(mmu.type_of(m), PageType::None | PageType::Writable)
                };
                if !ok(arg1) || !mmu.is_ram(arg2) {
                    Err(-EINVAL)
                } else {
                    let mut page = [0u8; 4096];
                    dom.mem
                        .read(arg2 << 12, &mut page)
                        .and_then(|()| dom.mem.write(arg1 << 12, &page))
                        .map_err(|_| -EFAULT)
                }
            }
            _ => {
                dom.log_once("unimplemented mmuext_op", cmd.into(), || {
                    format!("unimplemented mmuext_op cmd {cmd} -> -ENOSYS")
                });
                Err(-ENOSYS)
            }
        };
        r.inspect_err(|e| log::debug!("mmuext_op cmd {cmd} arg1 {arg1:#x}: {e}"))
    })
}

/// Set in the count of a continued mmu_update / mmuext_op (Xen's
/// MMU_UPDATE_PREEMPTED): `pdone` then already holds the work done.
const MMU_UPDATE_PREEMPTED: u64 = 1 << 31;

/// Requests handled per hypercall entry before it is continued, whatever
/// they cost: bounds the time a vCPU spends in one entry.
const BATCH_SLICE: u64 = 4096;

/// Run `op` on each `N`-byte request of a guest array, stopping at the first
/// error, and report how many completed through `pdone`, as Xen does.
///
/// Long batches are preempted, as Xen's are: when the page-table log
/// reaches [`crate::mmu::PT_LOG_PREEMPT`] writes or a slice of requests is
/// done, the rest becomes a continuation (`v.continuation`) with the list
/// advanced and `MMU_UPDATE_PREEMPTED` in the count. At least one request
/// is handled per entry, so a continued batch always progresses.
fn batch<const N: usize>(
    v: &mut PvVcpu,
    list: u64,
    count: u64,
    pdone: u64,
    foreign: u64,
    mut op: impl FnMut(&mut PvVcpu, &[u8; N]) -> Result<(), i64>,
) -> Result<i64, i64> {
    check_foreign(foreign & 0xffff)?;
    // The count is an unsigned int in the ABI.
    let mut count = count & 0xffff_ffff;
    let mut done = 0u32;
    if count & MMU_UPDATE_PREEMPTED != 0 {
        count &= !MMU_UPDATE_PREEMPTED;
        if pdone != 0 {
            done = v.read_u32(pdone).unwrap_or(0);
        }
    }
    let mut result = Ok(0);
    let mut i = 0u64;
    while i < count {
        if i > 0 && (v.pt_log.len() >= crate::mmu::PT_LOG_PREEMPT || i >= BATCH_SLICE) {
            v.continuation = Some([
                list.wrapping_add(i * N as u64),
                (count - i) | MMU_UPDATE_PREEMPTED,
                pdone,
                foreign,
                0,
                0,
            ]);
            break;
        }
        let mut b = [0u8; N];
        let r = v
            .copy_from(list.wrapping_add(i * N as u64), &mut b)
            .and_then(|()| op(v, &b));
        if let Err(e) = r {
            result = Err(e);
            break;
        }
        i += 1;
    }
    if pdone != 0 {
        let _ = v.copy_to(pdone, &done.wrapping_add(i as u32).to_le_bytes());
    }
    result
}

fn all_others(v: &PvVcpu) -> u64 {
    let n = v.dom.layout.max_vcpus.min(64);
    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    all & !(1u64 << v.id)
}

/// vCPUs other than `v` that a multi/all flush op names.
fn remote_mask(v: &PvVcpu, cmd: u32, mask_va: u64) -> u64 {
    match cmd {
        8 | 9 => v.read_u64(mask_va).unwrap_or(u64::MAX) & all_others(v),
        10 | 11 => all_others(v),
        _ => 0,
    }
}
