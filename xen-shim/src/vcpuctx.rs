//! `struct vcpu_guest_context` (x86_64) as VCPUOP_initialise passes it, and
//! applying it to a vCPU that is about to come online.

use crate::abi::{errno::*, FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use crate::mmu::PageType;
use crate::regs::{flags, Regs};
use crate::vcpu::{BootContext, PvVcpu, TrapInfo};

/// Offsets inside vcpu_guest_context for x86_64 (public/arch-x86/xen.h).
pub(crate) mod off {
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

pub(crate) const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;

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
///
/// Everything is checked and every type reference taken before the vCPU
/// changes: on any error the references taken so far are dropped again and
/// the vCPU is left as it was. On success the references the vCPU held
/// before (roots, GDT frames) are dropped.
pub fn apply_context(v: &mut PvVcpu, ctx: &BootContext) -> Result<Regs, i64> {
    // The LDT as MMUEXT_SET_LDT would take it (Xen's arch_set_info_guest).
    if ctx.ldt_base & 0xfff != 0
        || ctx.ldt_ents > 8192
        || !crate::guestva::range_ok(ctx.ldt_base, ctx.ldt_ents * 8)
    {
        return Err(-EINVAL);
    }
    let dom = v.dom.clone();
    let mem = &*dom.mem;
    // The GDT copy first: it takes no reference.
    let mut copy = Vec::with_capacity(ctx.gdt_ents.min(16 * 512) as usize);
    for i in 0..ctx.gdt_ents {
        let f = *ctx.gdt_frames.get((i / 512) as usize).ok_or(-EINVAL)?;
        let d = mem
            .read_u64((f << 12).wrapping_add((i % 512) * 8))
            .map_err(|_| -EFAULT)?;
        copy.push(crate::descriptors::check_descriptor(d).ok_or(-EINVAL)?);
    }
    let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
    // References taken so far, released if a later one is refused.
    let mut taken: Vec<u64> = Vec::new();
    let mut take =
        |mmu: &mut crate::mmu::Mmu, log: &mut crate::mmu::PtLog, mfn: u64, ty: PageType| {
            let r = mmu.get_type(mem, log, mfn, ty);
            if r.is_ok() {
                taken.push(mfn);
            }
            r
        };
    let r = (|| {
        take(&mut mmu, &mut v.pt_log, ctx.cr3, PageType::L4)?;
        if ctx.user_root != 0 {
            take(&mut mmu, &mut v.pt_log, ctx.user_root, PageType::L4)?;
        }
        for &f in &ctx.gdt_frames {
            take(&mut mmu, &mut v.pt_log, f, PageType::Desc)?;
        }
        Ok(())
    })();
    if let Err(e) = r {
        for &mfn in taken.iter().rev() {
            mmu.put_type(mem, mfn);
        }
        return Err(e);
    }
    // The references the vCPU held before (a vCPU initialised again).
    for old in [v.root_kernel, v.root_user]
        .into_iter()
        .filter(|&m| m != 0)
        .chain(v.gdt_frames.iter().copied())
    {
        mmu.put_type(mem, old);
    }
    drop(mmu);
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
    v.ldt_ents = ctx.ldt_ents as u32;
    v.gdt_frames = ctx.gdt_frames.clone();
    v.gdt = copy;
    v.gdt_dirty = true;
    Ok(ctx.regs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_domain;

    /// A context whose kernel root (frame 5, an empty L4) and user root
    /// (frame 7) are valid and whose GDT is frames `gdt` with `ents` entries.
    fn ctx(gdt: &[u64], ents: u64) -> BootContext {
        BootContext {
            cr3: 5,
            user_root: 7,
            gdt_frames: gdt.to_vec(),
            gdt_ents: ents,
            traps: vec![TrapInfo::default(); 256],
            ..Default::default()
        }
    }

    fn counts(v: &PvVcpu, mfns: &[u64]) -> Vec<u32> {
        let mmu = v.dom.mmu.lock().unwrap();
        mfns.iter().map(|&m| mmu.type_count(m)).collect()
    }

    /// Issue 12 item 13: a refused context leaves no type reference behind.
    #[test]
    fn refused_context_releases_every_reference_it_took() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(1, dom.clone());
        // A TSS descriptor in the GDT: refused after the roots were typed.
        dom.mem.write_u64(6 << 12, 0x0000_8900_0000_0067).unwrap();
        assert_eq!(apply_context(&mut v, &ctx(&[6], 1)), Err(-EINVAL));
        assert_eq!(counts(&v, &[5, 6, 7]), [0, 0, 0]);
        // The second GDT frame is a page table: the first frame's Desc
        // reference and both roots go again.
        dom.mmu
            .lock()
            .unwrap()
            .pin(&*dom.mem, &mut Vec::new(), 9, 1)
            .unwrap();
        assert_eq!(apply_context(&mut v, &ctx(&[8, 9], 513)), Err(-EINVAL));
        assert_eq!(counts(&v, &[5, 7, 8, 9]), [0, 0, 0, 1]);
        assert_eq!(v.root_kernel, 0);
        // A GDT frame outside guest memory.
        assert_eq!(apply_context(&mut v, &ctx(&[1 << 40], 1)), Err(-EFAULT));
        assert_eq!(counts(&v, &[5, 7]), [0, 0]);
    }

    #[test]
    fn accepted_context_holds_its_references_and_drops_the_old_ones() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(1, dom.clone());
        apply_context(&mut v, &ctx(&[8], 1)).unwrap();
        assert_eq!(counts(&v, &[5, 7, 8]), [1, 1, 1]);
        assert_eq!((v.root_kernel, v.root_user), (5, 7));
        // Initialised again with another GDT frame: frame 8 is released.
        apply_context(&mut v, &ctx(&[10], 1)).unwrap();
        assert_eq!(counts(&v, &[5, 7, 8, 10]), [1, 1, 0, 1]);
    }
}
