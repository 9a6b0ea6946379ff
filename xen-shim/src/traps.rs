//! Exception dispatch, bounce frames and the iret hypercall (Xen's
//! `create_bounce_frame`, `pv_inject_event`, `do_iret`).

use crate::abi::{
    shinfo, FLAT_KERNEL_CS, FLAT_KERNEL_SS, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START,
    TBF_INTERRUPT, VGCF_IN_SYSCALL,
};
use crate::guestva;
use crate::regs::{flags, Regs};
use crate::vcpu::{exception_name, has_error_code, Action, PvVcpu};

/// Handle a hardware exception taken while the guest ran.
pub fn exception(
    v: &mut PvVcpu,
    regs: &mut Regs,
    vector: u8,
    error: Option<u32>,
    cr2: u64,
) -> Action {
    match vector {
        14 => {
            let err = error.unwrap_or(0);
            if v.kernel_mode && err & 0x3 == 0x3 && err & 0x18 == 0 {
                if let Some(a) = crate::emulate::ptwr(v, regs, cr2) {
                    return a;
                }
            }
            let _ = v.mem().write_u64(v.vcpu_info() + shinfo::CR2, cr2);
            let err = (err & !4) | if v.kernel_mode { 0 } else { 4 };
            bounce(v, regs, 14, Some(err), cr2)
        }
        13 => {
            let err = error.unwrap_or(0);
            if err == 0 {
                if let Some(a) = crate::emulate::priv_op(v, regs) {
                    return a;
                }
                return bounce(v, regs, 13, Some(0), 0);
            }
            if err & 3 == 2 {
                // INT n through a DPL-0 gate of the real IDT.
                let n = (err >> 3) as u8;
                let needed = if v.kernel_mode { 1 } else { 3 };
                if v.traps[n as usize].flags & 3 >= needed {
                    regs.rip = regs.rip.wrapping_add(2);
                    return bounce(v, regs, n, None, 0);
                }
            }
            bounce(v, regs, 13, Some(err), 0)
        }
        6 => {
            if let Some(a) = crate::emulate::forced_cpuid(v, regs) {
                return a;
            }
            // PVM-style hosts report `int $n` (CD ib) as #UD: handle it as
            // Xen handles a software interrupt through a DPL-0 gate.
            let mut b = [0u8; 2];
            if crate::guestva::copy_from(v.mem(), v.current_root(), regs.rip, &mut b).is_ok()
                && b[0] == 0xcd
            {
                let n = b[1];
                let needed = if v.kernel_mode { 1 } else { 3 };
                if v.traps[n as usize].flags & 3 >= needed {
                    regs.rip = regs.rip.wrapping_add(2);
                    return bounce(v, regs, n, None, 0);
                }
                return bounce(v, regs, 13, Some((u32::from(n) << 3) | 2), 0);
            }
            bounce(v, regs, 6, None, 0)
        }
        0x80 => {
            // `int $0x80` through the monitor's DPL-3 gate (hardware hosts):
            // the frame's RIP is already past the instruction. Without a
            // trap table entry the guest's privilege may use, Xen raises
            // #GP on the instruction with the IDT-vector error code.
            let needed = if v.kernel_mode { 1 } else { 3 };
            if v.traps[0x80].flags & 3 >= needed {
                return bounce(v, regs, 0x80, None, 0);
            }
            regs.rip = regs.rip.wrapping_sub(2);
            bounce(v, regs, 13, Some((0x80 << 3) | 2), 0)
        }
        _ => {
            let err = if has_error_code(vector) {
                Some(error.unwrap_or(0))
            } else {
                None
            };
            bounce(v, regs, vector, err, cr2)
        }
    }
}

/// Deliver `vector` to the guest's trap table entry.
pub fn bounce(v: &mut PvVcpu, regs: &mut Regs, vector: u8, error: Option<u32>, cr2: u64) -> Action {
    let ti = v.traps[vector as usize];
    if ti.address == 0 {
        return Action::Crash(format!(
            "unhandled {} (vector {vector}) in guest {} mode at rip {:#x}, error {:?}, cr2 {:#x}: no trap handler registered",
            exception_name(vector),
            if v.kernel_mode { "kernel" } else { "user" },
            regs.rip,
            error,
            cr2
        ));
    }
    let fl = if ti.flags & 4 != 0 { TBF_INTERRUPT } else { 0 };
    match create_bounce_frame(v, regs, ti.address, error, fl) {
        Ok(()) => Action::Resume,
        Err(a) => a,
    }
}

/// Build Xen's bounce frame and switch the context to `handler`.
pub fn create_bounce_frame(
    v: &mut PvVcpu,
    regs: &mut Regs,
    handler: u64,
    error: Option<u32>,
    tbf: u32,
) -> Result<(), Action> {
    let saved_mask = v.upcall_mask();
    let (mut sp, cs) = if v.kernel_mode {
        (regs.rsp, regs.cs & !3)
    } else {
        v.toggle_mode();
        (v.kernel_sp, regs.cs)
    };
    sp &= !15;
    let rflags =
        (regs.rflags & !(flags::IF | flags::IOPL)) | if saved_mask { 0 } else { flags::IF };
    let mut words: Vec<u64> = vec![regs.rcx, regs.r11];
    if let Some(e) = error {
        words.push(u64::from(e));
    }
    words.extend_from_slice(&[
        regs.rip,
        u64::from(cs) | (u64::from(saved_mask) << 32),
        rflags,
        regs.rsp,
        u64::from(regs.ss),
    ]);
    sp = sp.wrapping_sub(words.len() as u64 * 8);
    if (HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&sp) {
        return Err(Action::Crash(format!(
            "bounce frame at {sp:#x} inside the hypervisor hole"
        )));
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    if let Err(f) = guestva::copy_to(v.mem(), v.root_kernel, sp, &bytes) {
        return Err(Action::Crash(format!(
            "fault writing a bounce frame to the guest kernel stack at {:#x} (error {:#x}); rip {:#x}",
            f.va, f.error_code, regs.rip
        )));
    }
    if tbf & TBF_INTERRUPT != 0 {
        v.set_upcall_mask(true);
    }
    regs.rip = handler;
    regs.cs = FLAT_KERNEL_CS;
    regs.ss = FLAT_KERNEL_SS;
    regs.rsp = sp;
    regs.rflags = (regs.rflags
        & !(flags::TF | flags::NT | flags::RF | flags::VM | flags::AC | flags::IOPL))
        | flags::IF
        | flags::FIXED;
    Ok(())
}

/// HYPERVISOR_iret: restore the context the guest pushed at rsp.
pub fn do_iret(v: &mut PvVcpu, regs: &mut Regs) -> Action {
    let mut b = [0u8; 72];
    if guestva::copy_from(v.mem(), v.root_kernel, regs.rsp, &mut b).is_err() {
        return Action::Crash(format!("iret: unreadable frame at {:#x}", regs.rsp));
    }
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let (rax, r11, rcx, fl, rip, cs, rflags, rsp, ss) =
        (w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7), w(8));
    if cs & 3 == 3 {
        if v.root_user == 0 {
            return Action::Crash("iret to user mode without a user page table".into());
        }
        if v.kernel_mode {
            v.toggle_mode();
        }
    }
    regs.rip = rip;
    regs.cs = (cs as u16) | 3;
    regs.ss = (ss as u16) | 3;
    regs.rsp = rsp;
    regs.rflags =
        (rflags & flags::ARCH_MASK & !(flags::IOPL | flags::VM)) | flags::IF | flags::FIXED;
    if fl & VGCF_IN_SYSCALL == 0 {
        regs.r11 = r11;
        regs.rcx = rcx;
    }
    v.set_upcall_mask(rflags & flags::IF == 0);
    regs.rax = rax;
    Action::Resume
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{map_low_memory, test_domain};
    use crate::vcpu::TrapInfo;

    /// A vCPU in kernel mode on `map_low_memory`'s tables with a kernel
    /// stack at 0x70000 and a #GP handler at 0x5000.
    fn vcpu() -> PvVcpu {
        let (dom, _) = test_domain(512);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        v.kernel_mode = true;
        v.kernel_ss = u64::from(FLAT_KERNEL_SS);
        v.kernel_sp = 0x70000;
        v.traps[13] = TrapInfo {
            flags: 0,
            address: 0x5000,
        };
        v
    }

    fn regs() -> Regs {
        Regs {
            rip: 0x3002, // past an `int $0x80` at 0x3000
            rsp: 0x60000,
            cs: FLAT_KERNEL_CS,
            ss: FLAT_KERNEL_SS,
            rflags: 0x202,
            ..Default::default()
        }
    }

    /// Found on a hardware host (tests/nested.rs, conformance guest traps):
    /// `int $0x80` arrives through the monitor's own DPL-3 gate, and with no
    /// guest handler the domain was crashed instead of getting Xen's #GP.
    #[test]
    fn int80_without_a_handler_is_a_gp_on_the_instruction() {
        let mut v = vcpu();
        let mut r = regs();
        assert_eq!(exception(&mut v, &mut r, 0x80, None, 0), Action::Resume);
        assert_eq!(r.rip, 0x5000, "bounced to the #GP handler");
        // Xen's frame on the guest stack: rcx, r11, then error code, rip, ...
        let frame = r.rsp;
        let mem = &*v.dom.mem;
        let words: Vec<u64> = (0..4)
            .map(|i| mem.read_u64(frame + i * 8).unwrap())
            .collect();
        assert_eq!(words[2], (0x80 << 3) | 2, "error code: {words:x?}");
        assert_eq!(words[3], 0x3000, "RIP of the int instruction: {words:x?}");
    }

    #[test]
    fn int80_with_a_handler_bounces_past_the_instruction() {
        let mut v = vcpu();
        v.traps[0x80] = TrapInfo {
            flags: 3,
            address: 0x6000,
        };
        let mut r = regs();
        assert_eq!(exception(&mut v, &mut r, 0x80, None, 0), Action::Resume);
        assert_eq!(r.rip, 0x6000);
        let rip = v.dom.mem.read_u64(r.rsp + 16).unwrap();
        assert_eq!(rip, 0x3002);
    }
}
