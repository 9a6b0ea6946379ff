//! `struct vcpu_guest_context` (x86_64) as VCPUOP_initialise passes it.

use crate::abi::errno::*;
use crate::regs::Regs;
use crate::vcpu::{BootContext, PvVcpu};

/// Offsets inside vcpu_guest_context for x86_64 (public/arch-x86/xen.h).
mod off {
    pub const USER_REGS: u64 = 8;
    pub const SIZE: usize = 5168;
}

/// Read the initial context for a secondary vCPU.
pub fn read_context(v: &PvVcpu, va: u64) -> Result<BootContext, i64> {
    let mut b = vec![0u8; off::SIZE];
    v.copy_from(va, &mut b)?;
    let w = |o: u64| u64::from_le_bytes(b[o as usize..o as usize + 8].try_into().unwrap_or([0; 8]));
    let u = off::USER_REGS;
    // cpu_user_regs x86_64: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi
    // error_code/entry_vector (8) rip cs(+pad) rflags rsp ss ...
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
        cs: w(u + 136) as u16,
        rflags: w(u + 144),
        rsp: w(u + 152),
        ss: w(u + 160) as u16,
    };
    if regs.rip == 0 {
        return Err(-EINVAL);
    }
    Ok(BootContext { regs })
}
