//! Hypercall dispatch (x86_64 PV ABI: number in rax, arguments in
//! rdi, rsi, rdx, r10, r8; result in rax).

use crate::abi::{errno::*, hc, hypercall_name};
use crate::regs::Regs;
use crate::vcpu::{field, Action, Flush, PvVcpu, TrapInfo};

/// Handle the hypercall in `regs` (a SYSCALL from guest kernel mode).
pub fn hypercall(v: &mut PvVcpu, regs: &mut Regs) -> Action {
    let nr = regs.rax;
    // SYSCALL left the return address in rcx and flags in r11 (Xen returns with SYSRET).
    let ret_rip = regs.rcx;
    let ret_flags = regs.r11;
    v.dom.count_hypercall(hypercall_name(nr));
    if nr == hc::IRET {
        return crate::traps::do_iret(v, regs);
    }
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    v.continuation = None;
    let (ret, action) = dispatch(v, nr, args, false);
    if let Some(a) = v.continuation.take() {
        // A continuation: return to the SYSCALL instruction itself (two
        // bytes before the return address), with the hypercall number and
        // the updated arguments, so the guest makes the call again (Xen
        // does `regs->rip -= 2`). Pending events are delivered first.
        log::trace!("hypercall {} preempted", hypercall_name(nr));
        regs.rax = nr;
        [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9] = a;
        regs.rip = ret_rip.wrapping_sub(2);
        regs.rflags = (ret_flags & crate::regs::flags::ARCH_MASK)
            | crate::regs::flags::IF
            | crate::regs::flags::FIXED;
        return action;
    }
    log::trace!(
        "hypercall {}({:#x}, {:#x}, {:#x}) = {ret} {action:?}",
        hypercall_name(nr),
        args[0],
        args[1],
        args[2]
    );
    regs.rax = ret as u64;
    regs.rip = ret_rip;
    regs.rflags = (ret_flags & crate::regs::flags::ARCH_MASK)
        | crate::regs::flags::IF
        | crate::regs::flags::FIXED;
    action
}

/// Dispatch hypercall `nr`; returns the result and the vCPU action.
pub fn dispatch(v: &mut PvVcpu, nr: u64, a: [u64; 6], in_multicall: bool) -> (i64, Action) {
    let r = |x: Result<i64, i64>| (x.unwrap_or_else(|e| e), Action::Resume);
    match nr {
        hc::SET_TRAP_TABLE => r(set_trap_table(v, a[0])),
        hc::MMU_UPDATE => r(crate::pvmm::mmu_update(v, a[0], a[1], a[2], a[3])),
        hc::SET_GDT => r(crate::descriptors::set_gdt(v, a[0], a[1])),
        hc::STACK_SWITCH => {
            v.kernel_ss = a[0];
            v.kernel_sp = a[1];
            r(Ok(0))
        }
        hc::FPU_TASKSWITCH => {
            v.cr0_ts = a[0] != 0;
            r(Ok(0))
        }
        hc::SET_DEBUGREG => r(set_debugreg(v, a[0], a[1])),
        hc::GET_DEBUGREG => r(if a[0] < 8 && a[0] != 4 && a[0] != 5 {
            Ok(v.debugreg[a[0] as usize] as i64)
        } else {
            Err(-EINVAL)
        }),
        hc::UPDATE_DESCRIPTOR => r(crate::descriptors::update_descriptor(v, a[0], a[1])),
        hc::MEMORY_OP => r(crate::memop::memory_op(v, a[0], a[1])),
        hc::MULTICALL if !in_multicall => multicall(v, a[0], a[1]),
        hc::UPDATE_VA_MAPPING => r(crate::pvmm::update_va_mapping(v, a[0], a[1], a[2])),
        hc::SET_TIMER_OP => {
            v.timer_deadline = (a[0] != 0).then_some(a[0]);
            r(Ok(0))
        }
        hc::XEN_VERSION => r(xen_version(v, a[0], a[1])),
        hc::CONSOLE_IO => r(crate::conio::console_io(v, a[0], a[1], a[2])),
        hc::GRANT_TABLE_OP => r(crate::gnttab::grant_table_op(v, a[0], a[1], a[2])),
        hc::VM_ASSIST => r(vm_assist(v, a[0], a[1])),
        hc::VCPU_OP => crate::vcpuop::vcpu_op(v, a[0], a[1], a[2]),
        hc::SET_SEGMENT_BASE => r(crate::descriptors::set_segment_base(v, a[0], a[1])),
        hc::MMUEXT_OP => r(crate::pvmm::mmuext_op(v, a[0], a[1], a[2], a[3])),
        hc::SCHED_OP => crate::vcpuop::sched_op(v, a[0], a[1]),
        hc::CALLBACK_OP => r(callback_op(v, a[0], a[1])),
        hc::EVENT_CHANNEL_OP => r(crate::evtchn_op::event_channel_op(v, a[0], a[1])),
        hc::PHYSDEV_OP => r(physdev_op(v, a[0], a[1])),
        _ => {
            v.dom.log_once("unimplemented hypercall", nr, || {
                format!(
                    "unimplemented hypercall {} ({nr}) -> -ENOSYS",
                    hypercall_name(nr)
                )
            });
            r(Err(-ENOSYS))
        }
    }
}

fn set_trap_table(v: &mut PvVcpu, va: u64) -> Result<i64, i64> {
    if va == 0 {
        v.traps.iter_mut().for_each(|t| *t = TrapInfo::default());
        return Ok(0);
    }
    for i in 0..256u64 {
        let mut b = [0u8; 16];
        v.copy_from(field(va, i * 16)?, &mut b)?;
        let address = u64::from_le_bytes(b[8..16].try_into().unwrap_or([0; 8]));
        if address == 0 {
            break;
        }
        let vector = b[0];
        v.traps[vector as usize] = TrapInfo {
            flags: b[1],
            address,
        };
    }
    Ok(0)
}

fn set_debugreg(v: &mut PvVcpu, reg: u64, val: u64) -> Result<i64, i64> {
    match reg {
        0..=3 => {
            if (crate::abi::HYPERVISOR_VIRT_START..crate::abi::HYPERVISOR_VIRT_END).contains(&val) {
                return Err(-EPERM);
            }
            v.debugreg[reg as usize] = val;
        }
        6 => v.debugreg[6] = (val & 0xffff_efff) | 0xffff_0ff0,
        7 => v.debugreg[7] = (val & !0xffff_0000_0000_2000) | 0x400,
        _ => return Err(-EINVAL),
    }
    Ok(0)
}

fn xen_version(v: &mut PvVcpu, cmd: u64, arg: u64) -> Result<i64, i64> {
    let put_str = |v: &PvVcpu, s: &str, len: usize| -> Result<i64, i64> {
        let mut b = vec![0u8; len];
        let n = s.len().min(len - 1);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        v.copy_to(arg, &b)?;
        Ok(0)
    };
    match cmd {
        0 => Ok(((crate::abi::XEN_MAJOR << 16) | crate::abi::XEN_MINOR) as i64),
        1 => put_str(v, ".0-xenkvm", 16),
        2 => {
            // compile_info: compiler[64], compile_by[16], compile_domain[32], compile_date[32]
            let mut b = vec![0u8; 144];
            b[..6].copy_from_slice(b"rustc\0");
            b[64..71].copy_from_slice(b"xenkvm\0");
            v.copy_to(arg, &b)?;
            Ok(0)
        }
        3 => put_str(v, "xen-3.0-x86_64", 1024),
        4 => put_str(v, "xenkvm", 64),
        5 => {
            v.copy_to(arg, &crate::abi::HYPERVISOR_VIRT_START.to_le_bytes())?;
            Ok(0)
        }
        6 => {
            let idx = v.read_u32(arg)?;
            if idx != 0 {
                return Err(-EINVAL);
            }
            let feats: u32 = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 17);
            v.copy_to(field(arg, 4)?, &feats.to_le_bytes())?;
            Ok(0)
        }
        7 => Ok(4096),
        8 => put_str(v, "", 16),
        _ => Err(-ENOSYS),
    }
}

fn multicall(v: &mut PvVcpu, list: u64, count: u64) -> (i64, Action) {
    if count > 4096 {
        return (-EINVAL, Action::Resume);
    }
    for i in 0..count {
        let Ok(va) = field(list, i * 64) else {
            return (-EFAULT, Action::Resume);
        };
        // Preempt between entries once the page-table log is large (Xen
        // preempts on `i && hypercall_preempt_check()`): continue from here.
        if i > 0 && v.pt_log.len() >= crate::mmu::PT_LOG_PREEMPT {
            v.continuation = Some([va, count - i, 0, 0, 0, 0]);
            return (0, Action::Resume);
        }
        let mut b = [0u8; 64];
        if v.copy_from(va, &mut b).is_err() {
            return (-EFAULT, Action::Resume);
        }
        let w = |k: usize| u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().unwrap_or([0; 8]));
        let op = w(0);
        v.dom.count_hypercall(hypercall_name(op));
        let (ret, action) = if op == hc::IRET || op == hc::MULTICALL {
            (-EINVAL, Action::Resume)
        } else {
            dispatch(v, op, [w(2), w(3), w(4), w(5), w(6), w(7)], true)
        };
        let sub = v.continuation.take();
        if v.copy_to(va.wrapping_add(8), &ret.to_le_bytes()).is_err() {
            return (-EFAULT, Action::Resume);
        }
        if let Some(args) = sub {
            // The entry preempted itself: store its continuation arguments
            // in the entry and run the multicall again from it (Xen's
            // xlat_multicall_entry + copy of the sub-call continuation).
            let b: Vec<u8> = args.iter().flat_map(|a| a.to_le_bytes()).collect();
            if v.copy_to(va.wrapping_add(16), &b).is_err() {
                return (-EFAULT, Action::Resume);
            }
            v.continuation = Some([va, count - i, 0, 0, 0, 0]);
            return (0, Action::Resume);
        }
        if action != Action::Resume {
            return (0, action);
        }
    }
    (0, Action::Resume)
}

fn vm_assist(v: &mut PvVcpu, cmd: u64, ty: u64) -> Result<i64, i64> {
    if !(ty <= 5 || ty == 32) {
        return Err(-EINVAL);
    }
    match cmd {
        0 => v
            .dom
            .vm_assist
            .fetch_or(1 << ty, std::sync::atomic::Ordering::SeqCst),
        1 => v
            .dom
            .vm_assist
            .fetch_and(!(1 << ty), std::sync::atomic::Ordering::SeqCst),
        _ => return Err(-ENOSYS),
    };
    Ok(0)
}

fn callback_op(v: &mut PvVcpu, cmd: u64, arg: u64) -> Result<i64, i64> {
    let mut b = [0u8; 16];
    v.copy_from(arg, &mut b)?;
    let ty = u16::from_le_bytes([b[0], b[1]]);
    let fl = u16::from_le_bytes([b[2], b[3]]);
    let addr = u64::from_le_bytes(b[8..16].try_into().unwrap_or([0; 8]));
    match cmd {
        0 => {
            let canonical = (addr >> 47) == 0 || (addr >> 47) == 0x1ffff;
            if !canonical {
                return Err(-EINVAL);
            }
            match ty {
                0 => v.event_callback = addr,
                1 => v.failsafe_callback = addr,
                2 => {
                    v.syscall_callback = addr;
                    v.syscall_masks_events = fl & 1 != 0;
                }
                4 => {}
                _ => return Err(-EINVAL),
            }
            Ok(0)
        }
        1 if ty == 4 => Ok(0),
        _ => Err(-EINVAL),
    }
}

fn physdev_op(v: &mut PvVcpu, cmd: u64, arg: u64) -> Result<i64, i64> {
    match cmd {
        6 => {
            let iopl = v.read_u32(arg)?;
            if iopl > 3 {
                return Err(-EINVAL);
            }
            v.iopl = iopl;
            Ok(0)
        }
        _ => {
            v.dom.log_once("unimplemented physdev_op", cmd, || {
                format!("unimplemented physdev_op {cmd} -> -ENOSYS")
            });
            Err(-ENOSYS)
        }
    }
}

/// MMUEXT_NEW_BASEPTR / guest `mov %cr3`.
pub fn new_baseptr(v: &mut PvVcpu, mfn: u64) -> Result<i64, i64> {
    let dom = v.dom.clone();
    let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
    mmu.get_type(&*dom.mem, &mut v.pt_log, mfn, crate::mmu::PageType::L4)?;
    if v.root_kernel != 0 {
        mmu.put_type(&*dom.mem, v.root_kernel);
    }
    v.root_kernel = mfn;
    v.flush = Flush::All;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{map_low_memory, test_domain};

    /// Bound on the page-table writes a vCPU buffers between two resumes:
    /// the preemption threshold plus what one request may add (here one).
    const LOG_BOUND: usize = crate::mmu::PT_LOG_PREEMPT + 1;

    /// Run the hypercall in `regs` as the monitor does: after each entry
    /// the page-table log is replayed (cleared here); a continuation
    /// returns to the SYSCALL itself (`0x1000`), which the guest then
    /// executes again. Returns the largest log seen and the entries made.
    fn run_to_completion(v: &mut PvVcpu, regs: &mut Regs) -> (usize, usize) {
        let mut max_log = 0;
        for entries in 1..100_000 {
            regs.rcx = 0x1002;
            regs.r11 = 0x202;
            let action = hypercall(v, regs);
            assert_eq!(action, Action::Resume);
            max_log = max_log.max(v.pt_log.len());
            v.pt_log.clear();
            if regs.rip != 0x1000 {
                assert_eq!(regs.rip, 0x1002);
                return (max_log, entries);
            }
        }
        panic!("the hypercall never completed");
    }

    /// `n` MMU_NORMAL_PT_UPDATE requests at guest VA `va`, all writing
    /// entry 0 of the untyped RAM frame 50 (each logs one write).
    fn write_requests(dom: &crate::domain::Domain, va: u64, n: u64) {
        let mut b = Vec::with_capacity(n as usize * 16);
        for i in 0..n {
            b.extend_from_slice(&(50u64 << 12).to_le_bytes());
            b.extend_from_slice(&i.to_le_bytes());
        }
        dom.mem.write(va, &b).unwrap();
    }

    /// Issue 12 item 4: a multicall of many mmu_updates used to buffer every
    /// page-table write until the hypercall returned (up to 64 GiB). The
    /// work is now preempted and continued, as Xen does, whenever the log
    /// reaches a bound, and the guest still sees every request done.
    #[test]
    fn multicall_of_mmu_updates_keeps_the_pt_log_bounded() {
        let (dom, _) = test_domain(512);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        // 1024 requests at 0x80000; a multicall of 256 mmu_updates of them,
        // each reporting its done count in its own slot at 0x7f000.
        write_requests(&dom, 0x80000, 1024);
        let calls = 256u64;
        let mc = 0x60000u64;
        for i in 0..calls {
            let mut e = [0u64; 8];
            e[0] = hc::MMU_UPDATE;
            e[1] = 0x5555;
            e[2] = 0x80000;
            e[3] = 1024;
            e[4] = 0x7f000 + i * 4;
            e[5] = crate::abi::DOMID_SELF;
            let b: Vec<u8> = e.iter().flat_map(|w| w.to_le_bytes()).collect();
            dom.mem.write(mc + i * 64, &b).unwrap();
        }
        let mut regs = Regs {
            rax: hc::MULTICALL,
            rdi: mc,
            rsi: calls,
            ..Default::default()
        };
        let (max_log, entries) = run_to_completion(&mut v, &mut regs);
        assert!(max_log <= LOG_BOUND, "pt_log grew to {max_log}");
        assert!(entries > 1);
        assert_eq!(regs.rax, 0);
        for i in 0..calls {
            assert_eq!(dom.mem.read_u64(mc + i * 64 + 8).unwrap(), 0, "result {i}");
            assert_eq!(dom.mem.read_u32(0x7f000 + i * 4).unwrap(), 1024, "done {i}");
        }
        assert_eq!(dom.mem.read_u64(50 << 12).unwrap(), 1023);
    }

    /// Found by fuzz/ (hypercall target): EVTCHNOP_status read its port at
    /// `arg + 4` with plain `+`, so a guest pointer near the top of the
    /// address space panicked the monitor (debug builds; release wrapped
    /// and read low memory). Every `arg + field` is now checked: -EFAULT.
    #[test]
    fn hostile_pointers_at_the_top_of_memory_are_efault_not_a_panic() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        for arg in [u64::MAX, u64::MAX - 1, u64::MAX - 3] {
            let (rc, _) = dispatch(&mut v, hc::EVENT_CHANNEL_OP, [5, arg, 0, 0, 0, 0], false);
            assert_eq!(rc, -EFAULT, "EVTCHNOP_status at {arg:#x}");
        }
        assert_eq!(crate::vcpu::field(u64::MAX - 3, 4), Err(-EFAULT));
        assert_eq!(crate::vcpu::field(0x1000, 8), Ok(0x1008));
    }

    /// Issue 12 item 5: log_once remembered every distinct message, so
    /// guest-chosen numbers (here unknown hypercall numbers) grew the set
    /// without bound. Its memory is now bounded whatever the guest does.
    #[test]
    fn unknown_hypercalls_do_not_grow_the_log_once_set() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        for nr in 0..20_000u64 {
            let (rc, _) = dispatch(&mut v, 1000 + nr, [0; 6], false);
            assert_eq!(rc, -ENOSYS);
            let (rc, _) = dispatch(
                &mut v,
                hc::MEMORY_OP,
                [(nr << 4) | 0xf, 0, 0, 0, 0, 0],
                false,
            );
            assert_eq!(rc, -ENOSYS);
        }
        assert!(
            dom.log_once_remembered() <= crate::guestlog::MAX_REMEMBERED,
            "{} messages remembered",
            dom.log_once_remembered()
        );
    }

    /// A plain mmu_update is preempted the same way; `pdone` accumulates
    /// over the continuations (MMU_UPDATE_PREEMPTED).
    #[test]
    fn long_mmu_update_is_preempted_and_continued() {
        let (dom, _) = test_domain(512);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        let n = 20_000u64;
        write_requests(&dom, 0x80000, n);
        let mut regs = Regs {
            rax: hc::MMU_UPDATE,
            rdi: 0x80000,
            rsi: n,
            rdx: 0x7f000,
            r10: crate::abi::DOMID_SELF,
            ..Default::default()
        };
        let (max_log, entries) = run_to_completion(&mut v, &mut regs);
        assert!(max_log <= LOG_BOUND, "pt_log grew to {max_log}");
        assert!(entries > 1);
        assert_eq!(regs.rax, 0);
        assert_eq!(dom.mem.read_u32(0x7f000).unwrap(), n as u32);
        assert_eq!(dom.mem.read_u64(50 << 12).unwrap(), n - 1);
    }
}
