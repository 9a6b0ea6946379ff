//! `struct vcpu_guest_context` (x86_64) as VCPUOP_initialise passes it, and
//! applying it to a vCPU that is about to come online.

use crate::abi::{errno::*, FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use crate::regs::{flags, Regs};
use crate::vcpu::{BootContext, PvVcpu, TrapInfo};

/// Offsets inside vcpu_guest_context for x86_64 (public/arch-x86/xen.h).
mod off {
    pub const FLAGS: usize = 512;
    pub const USER_REGS: usize = 520;
    pub const TRAP_CTXT: usize = 720;
    pub const LDT_BASE: usize = 4816;
    pub const GDT_FRAMES: usize = 4832;
    pub const GDT_ENTS: usize = 4960;
    pub const KERNEL_SS: usize = 4968;
    pub const KERNEL_SP: usize = 4976;
    pub const CTRLREG: usize = 4984;
    pub const EVENT_CB: usize = 5112;
    pub const FAILSAFE_CB: usize = 5120;
    pub const SYSCALL_CB: usize = 5128;
    pub const FS_BASE: usize = 5144;
    pub const GS_BASE_KERNEL: usize = 5152;
    pub const GS_BASE_USER: usize = 5160;
    pub const SIZE: usize = 5168;
}

const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;

/// Read the initial context for a secondary vCPU.
pub fn read_context(v: &PvVcpu, va: u64) -> Result<BootContext, i64> {
    let mut b = vec![0u8; off::SIZE];
    v.copy_from(va, &mut b)?;
    Ok(parse_context(&b))
}

pub fn parse_context(b: &[u8]) -> BootContext {
    let w = |o: usize| {
        u64::from_le_bytes(
            b.get(o..o + 8)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 8]),
        )
    };
    let u = off::USER_REGS;
    // cpu_user_regs: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi,
    // error_code/entry_vector, rip, cs, rflags, rsp, ss ...
    let regs = Regs {
        r15: w(u),
        r14: w(u + 8),
        r13: w(u + 16),
        r12: w(u + 24),
        rbp: w(u + 32),
        rbx: w(u + 40),
        r11: w(u + 48),
        r10: w(u + 56),
        r9: w(u + 64),
        r8: w(u + 72),
        rax: w(u + 80),
        rcx: w(u + 88),
        rdx: w(u + 96),
        rsi: w(u + 104),
        rdi: w(u + 112),
        rip: w(u + 128),
        cs: FLAT_KERNEL_CS,
        rflags: (w(u + 144) & flags::ARCH_MASK & !flags::IOPL) | flags::IF | flags::FIXED,
        rsp: w(u + 152),
        ss: FLAT_KERNEL_SS,
    };
    let mut traps = vec![TrapInfo::default(); 256];
    for i in 0..256usize {
        let t = off::TRAP_CTXT + i * 16;
        let address = w(t + 8);
        if address == 0 {
            continue;
        }
        let vector = b.get(t).copied().unwrap_or(0);
        traps[vector as usize] = TrapInfo {
            flags: b.get(t + 1).copied().unwrap_or(0),
            address,
        };
    }
    let gdt_ents = w(off::GDT_ENTS).min(16 * 512);
    let gdt_frames = (0..gdt_ents.div_ceil(512) as usize)
        .map(|i| w(off::GDT_FRAMES + i * 8))
        .collect();
    BootContext {
        regs,
        flags: w(off::FLAGS),
        traps,
        ldt_base: w(off::LDT_BASE),
        ldt_ents: w(off::LDT_BASE + 8),
        gdt_frames,
        gdt_ents,
        kernel_ss: w(off::KERNEL_SS),
        kernel_sp: w(off::KERNEL_SP),
        cr3: w(off::CTRLREG + 3 * 8) >> 12,
        user_root: w(off::CTRLREG + 8) >> 12,
        event_callback: w(off::EVENT_CB),
        failsafe_callback: w(off::FAILSAFE_CB),
        syscall_callback: w(off::SYSCALL_CB),
        fs_base: w(off::FS_BASE),
        gs_base_kernel: w(off::GS_BASE_KERNEL),
        gs_base_user: w(off::GS_BASE_USER),
        iopl: ((w(u + 144) >> 12) & 3) as u32,
    }
}

/// Load `ctx` into a vCPU that is coming online (Xen's arch_set_info_guest).
pub fn apply_context(v: &mut PvVcpu, ctx: &BootContext) -> Result<Regs, i64> {
    let dom = v.dom.clone();
    {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        mmu.get_type(&*dom.mem, &mut v.pt_log, ctx.cr3, crate::mmu::PageType::L4)?;
        if ctx.user_root != 0 {
            if let Err(e) = mmu.get_type(
                &*dom.mem,
                &mut v.pt_log,
                ctx.user_root,
                crate::mmu::PageType::L4,
            ) {
                mmu.put_type(&*dom.mem, ctx.cr3);
                return Err(e);
            }
        }
    }
    v.root_kernel = ctx.cr3;
    v.root_user = ctx.user_root;
    v.kernel_mode = true;
    v.traps = ctx.traps.clone();
    v.kernel_ss = ctx.kernel_ss;
    v.kernel_sp = ctx.kernel_sp;
    v.event_callback = ctx.event_callback;
    v.failsafe_callback = ctx.failsafe_callback;
    v.syscall_callback = ctx.syscall_callback;
    v.syscall_masks_events = ctx.flags & VGCF_SYSCALL_DISABLES_EVENTS != 0;
    v.fs_base = ctx.fs_base;
    v.gs_base_kernel = ctx.gs_base_kernel;
    v.gs_base_user = ctx.gs_base_user;
    v.iopl = ctx.iopl;
    v.ldt_base = ctx.ldt_base;
    v.ldt_ents = ctx.ldt_ents.min(8192) as u32;
    if !ctx.gdt_frames.is_empty() {
        // set_gdt reads the frame list from guest memory; do it directly here.
        let mut copy = Vec::with_capacity(ctx.gdt_ents as usize);
        for i in 0..ctx.gdt_ents {
            let f = ctx.gdt_frames[(i / 512) as usize];
            let d = dom
                .mem
                .read_u64((f << 12) + (i % 512) * 8)
                .map_err(|_| -EFAULT)?;
            copy.push(crate::descriptors::check_descriptor(d).ok_or(-EINVAL)?);
        }
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        for &f in &ctx.gdt_frames {
            mmu.get_type(&*dom.mem, &mut v.pt_log, f, crate::mmu::PageType::Desc)?;
        }
        v.gdt_frames = ctx.gdt_frames.clone();
        v.gdt = copy;
        v.gdt_dirty = true;
    }
    Ok(ctx.regs)
}
