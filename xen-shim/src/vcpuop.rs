//! VCPUOP_* and SCHEDOP_* hypercalls.

use crate::abi::{errno::*, shinfo};
use crate::domain::Domain;
use crate::mmu::PageType;
use crate::vcpu::{field, Action, PvVcpu};

/// The longest periodic timer period Xen accepts (its STIME_DELTA_MAX).
const STIME_DELTA_MAX: u64 = i64::MAX as u64;

fn ok(r: Result<i64, i64>) -> (i64, Action) {
    (r.unwrap_or_else(|e| e), Action::Resume)
}

pub fn vcpu_op(v: &mut PvVcpu, cmd: u64, vcpuid: u64, arg: u64) -> (i64, Action) {
    let max = u64::from(v.dom.layout.max_vcpus);
    let target = vcpuid as u32;
    match cmd {
        0 => {
            // VCPUOP_initialise: the monitor applies the context when the vCPU comes up.
            if vcpuid >= max {
                return ok(Err(-ENOENT));
            }
            match crate::vcpuctx::read_context(v, arg) {
                Ok(ctx) => {
                    v.pending_boot.push((target, ctx));
                    if target < 64 {
                        v.dom
                            .initialised
                            .fetch_or(1 << target, std::sync::atomic::Ordering::SeqCst);
                    }
                    ok(Ok(0))
                }
                Err(e) => ok(Err(e)),
            }
        }
        1 => {
            if vcpuid >= max {
                return ok(Err(-ENOENT));
            }
            // Xen: -EINVAL for a vCPU never given a context, and no log.
            let initialised = target < 64
                && v.dom.initialised.load(std::sync::atomic::Ordering::SeqCst) & (1 << target) != 0;
            if !initialised {
                return ok(Err(-EINVAL));
            }
            if !v.dom.is_online(target) {
                v.vcpus_to_up.push(target);
            }
            ok(Ok(0))
        }
        2 if target == v.id => (0, Action::Down),
        // VCPUOP_down of another vCPU: asynchronous in Xen. Linux uses it
        // only around re-registering a vCPU's areas after a resume, then
        // brings the vCPU up again; here the vCPU goes on running (its
        // vcpu_info and runstate areas may be registered while it runs).
        2 => ok(if vcpuid >= max { Err(-ENOENT) } else { Ok(0) }),
        3 => ok(if vcpuid >= max {
            Err(-ENOENT)
        } else {
            Ok(v.dom.is_online(target) as i64)
        }),
        5 => {
            if vcpuid >= max {
                return ok(Err(-ENOENT));
            }
            match v.read_u64(arg) {
                Ok(va) => {
                    if target == v.id {
                        v.runstate_va = va;
                    }
                    ok(Ok(0))
                }
                Err(e) => ok(Err(e)),
            }
        }
        6 => {
            if target != v.id {
                return ok(Err(-EINVAL));
            }
            match v.read_u64(arg) {
                // Xen: at least 1 ms, at most STIME_DELTA_MAX.
                Ok(p) if (1_000_000..=STIME_DELTA_MAX).contains(&p) => {
                    v.periodic_ns = Some(p);
                    let now = v.dom.clock.now_ns(v.dom.platform.tsc());
                    v.periodic_next = Some(now.saturating_add(p));
                    ok(Ok(0))
                }
                Ok(_) => ok(Err(-EINVAL)),
                Err(e) => ok(Err(e)),
            }
        }
        7 => {
            v.periodic_ns = None;
            v.periodic_next = None;
            ok(Ok(0))
        }
        8 => {
            if target != v.id {
                return ok(Err(-EINVAL));
            }
            let mut b = [0u8; 16];
            if let Err(e) = v.copy_from(arg, &mut b) {
                return ok(Err(e));
            }
            let t = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
            let flags = u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4]));
            let now = v.dom.clock.now_ns(v.dom.platform.tsc());
            log::trace!("vCPU {}: singleshot timer at {t} ns (now {now} ns)", v.id);
            if flags & 1 != 0 && t < now {
                return ok(Err(-ETIME));
            }
            v.timer_deadline = Some(t);
            ok(Ok(0))
        }
        9 => {
            v.timer_deadline = None;
            ok(Ok(0))
        }
        10 => ok(register_vcpu_info(v, target, arg)),
        13 => ok(register_time_memory_area(v, target, arg)),
        _ => {
            v.dom.log_once("unimplemented vcpu_op", cmd, || {
                format!("unimplemented vcpu_op {cmd} -> -ENOSYS")
            });
            ok(Err(-ENOSYS))
        }
    }
}

/// VCPUOP_register_vcpu_time_memory_area: a second copy of the vCPU's
/// vcpu_time_info at a guest virtual address, which Linux maps into user
/// space for the vDSO's clock_gettime. xenkvm's time info never changes (system
/// time is a fixed linear function of the synchronized TSC, flagged
/// TSC_STABLE), so one write at registration keeps it current.
///
/// No type reference is taken (unlike vcpu_info): as in Xen, where the
/// time area is updated by a guest-virtual copy, the one write goes through
/// [`PvVcpu::copy_to`], which walks the guest's tables and requires a
/// writable mapping at every level. Page tables are never mapped writable
/// (the page-type rules), so the write cannot land in one; and since the
/// area is never written again, nothing later can either.
fn register_time_memory_area(v: &mut PvVcpu, target: u32, arg: u64) -> Result<i64, i64> {
    if target >= v.dom.layout.max_vcpus {
        return Err(-ENOENT);
    }
    let va = v.read_u64(arg)?;
    if va == 0 {
        return Ok(0);
    }
    let mut info = [0u8; 32];
    v.dom.clock.encode_time_info(&mut info);
    v.copy_to(va, &info)?;
    Ok(0)
}

fn register_vcpu_info(v: &mut PvVcpu, target: u32, arg: u64) -> Result<i64, i64> {
    if target >= v.dom.layout.max_vcpus {
        return Err(-ENOENT);
    }
    let mut b = [0u8; 16];
    v.copy_from(arg, &mut b)?;
    let mfn = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let offset = u64::from(u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4])));
    let owned = v
        .dom
        .mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_ram(mfn);
    if offset & 7 != 0 || offset + shinfo::VCPU_INFO_SIZE > 4096 || !owned {
        return Err(-EINVAL);
    }
    let dom = v.dom.clone();
    let new = (mfn << 12) + offset;
    let slot = dom.vcpu_info.get(target as usize).ok_or(-EINVAL)?;
    let old = slot.load(std::sync::atomic::Ordering::Acquire);
    let legacy = Domain::legacy_vcpu_info(dom.shared_info_gpa(), target);
    if old != legacy {
        return Err(-EBUSY);
    }
    // As Xen's map_guest_area: the page holds a writable type reference for
    // as long as it is the vcpu_info (for good: it is never unregistered),
    // so a page table cannot become the area and the area cannot become a
    // page table while the monitor writes event bits into it.
    {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        mmu.get_type(&*dom.mem, &mut v.pt_log, mfn, PageType::Writable)?;
    }
    let moved = (|| {
        let mut info = [0u8; 64];
        dom.mem.read(old, &mut info).map_err(|_| -EFAULT)?;
        dom.mem.write(new, &info).map_err(|_| -EFAULT)?;
        // Xen marks everything pending so the guest rescans.
        dom.mem
            .write_u64(new + shinfo::PENDING_SEL, u64::MAX)
            .map_err(|_| -EFAULT)?;
        dom.mem
            .write_u8(new + shinfo::UPCALL_PENDING, 1)
            .map_err(|_| -EFAULT)?;
        slot.compare_exchange(
            old,
            new,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        )
        .map_err(|_| -EBUSY)
    })();
    if let Err(e) = moved {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        mmu.put_type(&*dom.mem, mfn);
        return Err(e);
    }
    if target == v.id {
        v.vcpu_info_registered = true;
    }
    Ok(0)
}

pub fn sched_op(v: &mut PvVcpu, cmd: u64, arg: u64) -> (i64, Action) {
    match cmd {
        0 => (0, Action::Yield),
        1 => {
            v.set_upcall_mask(false);
            if v.upcall_pending() {
                (0, Action::Resume)
            } else {
                (0, Action::Block)
            }
        }
        2 => match v.read_u32(arg) {
            Ok(reason) => (0, Action::Shutdown(reason)),
            Err(e) => (e, Action::Resume),
        },
        3 => {
            let mut b = [0u8; 24];
            if let Err(e) = v.copy_from(arg, &mut b) {
                return (e, Action::Resume);
            }
            let list = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
            let nr = u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4]));
            let timeout = u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8]));
            if nr > 128 {
                return (-EINVAL, Action::Resume);
            }
            let mut ports = Vec::new();
            for i in 0..u64::from(nr) {
                match field(list, i * 4).and_then(|va| v.read_u32(va)) {
                    Ok(p) => ports.push(p),
                    Err(e) => return (e, Action::Resume),
                }
            }
            let si = v.dom.shared_info_gpa();
            if ports
                .iter()
                .any(|&p| crate::evtchn::is_pending(v.mem(), si, p))
            {
                return (0, Action::Resume);
            }
            (
                0,
                Action::Poll {
                    ports,
                    timeout: (timeout != 0).then_some(timeout),
                },
            )
        }
        4 => (-EPERM, Action::Resume),
        5 => (0, Action::Resume),
        _ => {
            v.dom.log_once("unimplemented sched_op", cmd, || {
                format!("unimplemented sched_op {cmd} -> -ENOSYS")
            });
            (-ENOSYS, Action::Resume)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{map_low_memory, test_domain, test_domain_vcpus};

    /// Write a vcpu_register_vcpu_info {mfn, offset} at guest VA 0xa000 and
    /// issue VCPUOP_register_vcpu_info for vCPU 0.
    fn register(v: &mut PvVcpu, mfn: u64, offset: u32) -> i64 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&mfn.to_le_bytes());
        b[8..12].copy_from_slice(&offset.to_le_bytes());
        v.dom.mem.write(0xa000, &b).unwrap();
        vcpu_op(v, 10, 0, 0xa000).0
    }

    /// Issue 12 item 1: a page table cannot become the vcpu_info area (the
    /// monitor's writes would put guest-chosen entries into it), and the
    /// registered area holds a writable type reference, so it cannot be
    /// pinned as a page table afterwards.
    #[test]
    fn vcpu_info_holds_a_writable_type_reference() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        let mut log = Vec::new();
        // Frame 20: an (empty, valid) L1 page table.
        dom.mmu
            .lock()
            .unwrap()
            .pin(&*dom.mem, &mut log, 20, 1)
            .unwrap();
        assert_eq!(register(&mut v, 20, 0), -EINVAL);
        let mut page = [0u8; 4096];
        dom.mem.read(20 << 12, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0), "the L1 was written");
        assert_eq!(dom.vcpu_info_gpa(0), dom.layout.shared_info_gpa);
        // A plain page is accepted and then typed writable for good.
        assert_eq!(register(&mut v, 21, 64), 0);
        assert_eq!(dom.vcpu_info_gpa(0), (21 << 12) + 64);
        let mut mmu = dom.mmu.lock().unwrap();
        assert_eq!(mmu.type_of(21), PageType::Writable);
        assert_eq!(mmu.pin(&*dom.mem, &mut log, 21, 1), Err(-EINVAL));
        assert_eq!(
            mmu.get_type(&*dom.mem, &mut log, 21, PageType::L1),
            Err(-EINVAL)
        );
    }

    /// The time area is written by guest-virtual copy: a page table (mapped
    /// read-only, as the type rules require) cannot be the target.
    #[test]
    fn time_area_is_never_written_through_a_read_only_mapping() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        let mut log = Vec::new();
        dom.mmu
            .lock()
            .unwrap()
            .pin(&*dom.mem, &mut log, 22, 1)
            .unwrap();
        // The test tables map frame 22 at VA 0x16000: make that read-only.
        dom.mem.write_u64(0x4000 + 22 * 8, (22 << 12) | 5).unwrap();
        dom.mem.write_u64(0xa000, 0x16000).unwrap();
        assert_eq!(vcpu_op(&mut v, 13, 0, 0xa000).0, -EFAULT);
        let mut page = [0u8; 4096];
        dom.mem.read(22 << 12, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0), "the L1 was written");
        // A writable mapping is accepted.
        dom.mem.write_u64(0xa000, 0x17000).unwrap();
        assert_eq!(vcpu_op(&mut v, 13, 0, 0xa000).0, 0);
    }

    /// VCPUOP_down of another vCPU (Linux, around a resume) is accepted
    /// and leaves it running; of a vCPU the domain lacks, -ENOENT.
    #[test]
    fn remote_vcpuop_down_is_accepted() {
        let (dom, _) = test_domain_vcpus(64, 2);
        let mut v = PvVcpu::new(0, dom);
        assert_eq!(vcpu_op(&mut v, 2, 1, 0), (0, Action::Resume));
        assert_eq!(vcpu_op(&mut v, 2, 2, 0).0, -ENOENT);
        assert_eq!(vcpu_op(&mut v, 2, 0, 0), (0, Action::Down));
    }

    /// Issue 12 item 6: VCPUOP_up of a vCPU never initialised is -EINVAL
    /// (as in Xen) and requests nothing of the monitor (which logged a
    /// warning for each such request).
    #[test]
    fn vcpuop_up_uninitialised_is_einval() {
        let (dom, _) = test_domain_vcpus(64, 2);
        let mut v = PvVcpu::new(0, dom);
        let max = u64::from(v.dom.layout.max_vcpus);
        assert!(max >= 2, "test domain needs a secondary vCPU");
        let (rc, _) = vcpu_op(&mut v, 1, 1, 0);
        assert_eq!(rc, -EINVAL);
        assert!(v.vcpus_to_up.is_empty());
        // Once initialised (as VCPUOP_initialise marks it), up is accepted.
        v.dom
            .initialised
            .fetch_or(1 << 1, std::sync::atomic::Ordering::SeqCst);
        let (rc, _) = vcpu_op(&mut v, 1, 1, 0);
        assert_eq!(rc, 0);
        assert_eq!(v.vcpus_to_up, vec![1]);
    }
}
