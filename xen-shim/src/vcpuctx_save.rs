//! The inverse of [`crate::vcpuctx::parse_context`]: a vCPU's state as
//! `struct vcpu_guest_context` (x86_64), Xen's XEN_DOMCTL_getvcpucontext
//! layout and the body of a migration stream's X86_PV_VCPU_BASIC record.

use crate::abi::FLAT_KERNEL_CS;
use crate::regs::{flags, Regs};
use crate::vcpu::{BootContext, PvVcpu};
use crate::vcpuctx::{off, VGCF_SYSCALL_DISABLES_EVENTS};

/// VGCF_i387_valid | VGCF_in_kernel | VGCF_online.
const VGCF_I387_VALID: u64 = 1 << 0;
const VGCF_IN_KERNEL: u64 = 1 << 2;
const VGCF_ONLINE: u64 = 1 << 5;

/// The context a vCPU would resume with from `regs` (the guest's
/// registers as it is to continue).
pub fn capture_context(v: &PvVcpu, regs: &Regs) -> BootContext {
    let mut fl = VGCF_ONLINE;
    if v.kernel_mode {
        fl |= VGCF_IN_KERNEL;
    }
    if v.syscall_masks_events {
        fl |= VGCF_SYSCALL_DISABLES_EVENTS;
    }
    BootContext {
        regs: *regs,
        flags: fl,
        traps: v.traps.clone(),
        ldt_base: v.ldt_base,
        ldt_ents: u64::from(v.ldt_ents),
        gdt_frames: v.gdt_frames.clone(),
        gdt_ents: v.gdt.len() as u64,
        kernel_ss: v.kernel_ss,
        kernel_sp: v.kernel_sp,
        cr3: v.root_kernel,
        user_root: v.root_user,
        event_callback: v.event_callback,
        failsafe_callback: v.failsafe_callback,
        syscall_callback: v.syscall_callback,
        fs_base: v.fs_base,
        gs_base_kernel: v.gs_base_kernel,
        gs_base_user: v.gs_base_user,
        iopl: v.iopl,
    }
}

/// Encode `ctx` as vcpu_guest_context; `fpu` (the FXSAVE image, 512
/// bytes) goes in its fpu_ctxt and sets VGCF_i387_valid.
pub fn encode_context(ctx: &BootContext, fpu: Option<&[u8; 512]>) -> Vec<u8> {
    let mut b = vec![0u8; off::SIZE];
    let mut put = |o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    let r = &ctx.regs;
    let u = off::USER_REGS;
    for (i, v) in [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi,
    ]
    .into_iter()
    .enumerate()
    {
        put(u + i * 8, v);
    }
    put(u + 128, r.rip);
    put(u + 136, u64::from(r.cs));
    let rflags = (r.rflags & !flags::IOPL) | (u64::from(ctx.iopl & 3) << 12);
    put(u + 144, rflags);
    put(u + 152, r.rsp);
    put(u + 160, u64::from(r.ss));
    let mut fl = ctx.flags;
    if fpu.is_some() {
        fl |= VGCF_I387_VALID;
    }
    put(off::FLAGS, fl);
    for (vector, t) in ctx.traps.iter().enumerate().take(256) {
        if t.address == 0 {
            continue;
        }
        let at = off::TRAP_CTXT + vector * 16;
        put(at + 8, t.address);
        // vector, flags, cs
        put(
            at,
            vector as u64 | (u64::from(t.flags) << 8) | (u64::from(FLAT_KERNEL_CS) << 16),
        );
    }
    put(off::LDT_BASE, ctx.ldt_base);
    put(off::LDT_BASE + 8, ctx.ldt_ents);
    for (i, f) in ctx.gdt_frames.iter().take(16).enumerate() {
        put(off::GDT_FRAMES + i * 8, *f);
    }
    put(off::GDT_ENTS, ctx.gdt_ents);
    put(off::KERNEL_SS, ctx.kernel_ss);
    put(off::KERNEL_SP, ctx.kernel_sp);
    put(off::CTRLREG + 3 * 8, ctx.cr3 << 12);
    put(off::CTRLREG + 8, ctx.user_root << 12);
    put(off::EVENT_CB, ctx.event_callback);
    put(off::FAILSAFE_CB, ctx.failsafe_callback);
    put(off::SYSCALL_CB, ctx.syscall_callback);
    put(off::FS_BASE, ctx.fs_base);
    put(off::GS_BASE_KERNEL, ctx.gs_base_kernel);
    put(off::GS_BASE_USER, ctx.gs_base_user);
    if let Some(f) = fpu {
        b[..512].copy_from_slice(f);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcpu::TrapInfo;
    use crate::vcpuctx::parse_context;

    #[test]
    fn encoded_context_parses_back() {
        let mut traps = vec![TrapInfo::default(); 256];
        traps[14] = TrapInfo {
            flags: 0,
            address: 0xffff_ffff_8100_0000,
        };
        traps[0x80] = TrapInfo {
            flags: 3,
            address: 0xffff_ffff_8100_1000,
        };
        let ctx = BootContext {
            regs: Regs {
                rax: 0,
                rbx: 2,
                rdx: 0x1234,
                r15: 15,
                rip: 0xffff_ffff_8100_2000,
                rsp: 0xffff_c900_0000_0ff8,
                rflags: flags::IF | flags::FIXED,
                cs: crate::abi::FLAT_KERNEL_CS,
                ss: crate::abi::FLAT_KERNEL_SS,
                ..Default::default()
            },
            flags: VGCF_ONLINE | VGCF_IN_KERNEL | VGCF_SYSCALL_DISABLES_EVENTS,
            traps,
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: vec![77],
            gdt_ents: 14,
            kernel_ss: u64::from(crate::abi::FLAT_KERNEL_SS),
            kernel_sp: 0xffff_c900_0000_8000,
            cr3: 0x1000,
            user_root: 0x1001,
            event_callback: 0xffff_ffff_8100_3000,
            failsafe_callback: 0xffff_ffff_8100_4000,
            syscall_callback: 0xffff_ffff_8100_5000,
            fs_base: 1,
            gs_base_kernel: 2,
            gs_base_user: 3,
            iopl: 1,
        };
        let b = encode_context(&ctx, Some(&[7u8; 512]));
        assert_eq!(b.len(), off::SIZE);
        assert_eq!(b[0], 7);
        let p = parse_context(&b);
        assert_eq!(p.regs, ctx.regs);
        assert_eq!(p.flags, ctx.flags | VGCF_I387_VALID);
        assert_eq!(p.traps[14].address, ctx.traps[14].address);
        assert_eq!(p.traps[0x80].flags, 3);
        assert_eq!(p.gdt_frames, ctx.gdt_frames);
        assert_eq!(p.gdt_ents, 14);
        assert_eq!((p.cr3, p.user_root), (0x1000, 0x1001));
        assert_eq!(
            (p.kernel_ss, p.kernel_sp, p.iopl),
            (ctx.kernel_ss, ctx.kernel_sp, 1)
        );
        assert_eq!(
            (p.event_callback, p.failsafe_callback, p.syscall_callback),
            (
                ctx.event_callback,
                ctx.failsafe_callback,
                ctx.syscall_callback
            )
        );
        assert_eq!((p.fs_base, p.gs_base_kernel, p.gs_base_user), (1, 2, 3));
    }
}
