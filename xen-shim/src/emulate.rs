//! Emulation of what a PV guest may not do itself: forced-emulation CPUID,
//! privileged instructions (#GP with error code 0) and writes to read-only
//! L1 page tables (Xen's writable-page-table assist, "ptwr").

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use crate::abi::pte;
use crate::guestva;
use crate::mmu::PageType;
use crate::regs::{flags, Regs};
use crate::vcpu::{Action, PvVcpu};

const FORCED_CPUID: [u8; 7] = [0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x0f, 0xa2];
/// Xen's PAT: WB, WT, UC-, UC, WC, WP, UC, UC.
pub const XEN_PAT: u64 = 0x0000_0501_0007_0406;
const GUEST_CR0: u64 = 0x8005_0033;
const CR4_HW: u64 = 0x20 | 0x200 | 0x400; // PAE OSFXSR OSXMMEXCPT
const CR4_GUEST_BITS: u64 = 0x4 | 0x8; // TSD DE

fn fetch(v: &PvVcpu, rip: u64) -> Option<Instruction> {
    let mut bytes = [0u8; 15];
    // Fetch up to the end of the page first, then try the next page.
    let first = (4096 - (rip & 0xfff)).min(15) as usize;
    guestva::copy_from(v.mem(), v.current_root(), rip, &mut bytes[..first]).ok()?;
    let mut len = first;
    if first < 15
        && guestva::copy_from(
            v.mem(),
            v.current_root(),
            rip.wrapping_add(first as u64),
            &mut bytes[first..],
        )
        .is_ok()
    {
        len = 15;
    }
    let mut d = Decoder::with_ip(64, &bytes[..len], rip, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

/// `ud2; .ascii "xen"; cpuid`: evaluate CPUID with the guest policy (and
/// xenkvm's statistics leaf, [`crate::stats::STATS_LEAF`]), in guest kernel
/// or user mode.
pub fn forced_cpuid(v: &mut PvVcpu, regs: &mut Regs) -> Option<Action> {
    let mut b = [0u8; 7];
    guestva::copy_from(v.mem(), v.current_root(), regs.rip, &mut b).ok()?;
    if b != FORCED_CPUID {
        return None;
    }
    let (leaf, sub) = (regs.rax as u32, regs.rcx as u32);
    let r = if leaf == crate::stats::STATS_LEAF {
        crate::stats::leaf(v, sub)
    } else {
        v.dom.cpuid.lookup(leaf, sub, v.id)
    };
    regs.rax = r[0].into();
    regs.rbx = r[1].into();
    regs.rcx = r[2].into();
    regs.rdx = r[3].into();
    regs.rip = regs.rip.wrapping_add(7);
    Some(Action::Resume)
}

fn reg_get(regs: &Regs, r: Register) -> u64 {
    let full = r.full_register();
    let n = full.number().wrapping_sub(Register::RAX.number()) as u8;
    let val = regs.gpr(n.min(15));
    if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) {
        return (regs.gpr(match r {
            Register::AH => 0,
            Register::CH => 1,
            Register::DH => 2,
            _ => 3,
        }) >> 8)
            & 0xff;
    }
    match r.size() {
        1 => val & 0xff,
        2 => val & 0xffff,
        4 => val & 0xffff_ffff,
        _ => val,
    }
}

fn reg_set(regs: &mut Regs, r: Register, val: u64) {
    let n = (r
        .full_register()
        .number()
        .wrapping_sub(Register::RAX.number()) as u8)
        .min(15);
    let old = regs.gpr(n);
    let new = match r.size() {
        1 => (old & !0xff) | (val & 0xff),
        2 => (old & !0xffff) | (val & 0xffff),
        4 => val & 0xffff_ffff,
        _ => val,
    };
    regs.set_gpr(n, new);
}

/// Encoding number of a 64-bit GPR (never out of 0..=15, whatever `r` is).
fn gpr_index(r: Register) -> u8 {
    (r.full_register()
        .number()
        .wrapping_sub(Register::RAX.number()) as u8)
        .min(15)
}

fn is_gpr(r: Register) -> bool {
    r.is_gpr()
}

/// Emulate a privileged instruction that raised #GP(0). None = not ours.
pub fn priv_op(v: &mut PvVcpu, regs: &mut Regs) -> Option<Action> {
    let insn = fetch(v, regs.rip)?;
    let kernel = v.kernel_mode;
    let io_ok = (kernel && v.iopl >= 1) || v.iopl >= 3;
    let next = regs.rip.wrapping_add(insn.len() as u64);
    match insn.mnemonic() {
        Mnemonic::Wrmsr if kernel => {
            let val = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            if !write_msr(v, regs.rcx as u32, val) {
                return None;
            }
        }
        Mnemonic::Rdmsr if kernel => {
            let val = read_msr(v, regs.rcx as u32)?;
            regs.rax = val & 0xffff_ffff;
            regs.rdx = val >> 32;
        }
        Mnemonic::Mov if kernel && insn.op_count() == 2 => {
            let (r0, r1) = (insn.op0_register(), insn.op1_register());
            if r1.is_cr() && is_gpr(r0) {
                let val = match r1 {
                    Register::CR0 => GUEST_CR0 | if v.cr0_ts { 8 } else { 0 },
                    Register::CR2 => v
                        .mem()
                        .read_u64(v.vcpu_info() + crate::abi::shinfo::CR2)
                        .unwrap_or(0),
                    Register::CR3 => v.root_kernel << 12,
                    Register::CR4 => CR4_HW | v.cr4_guest,
                    _ => return None,
                };
                regs.set_gpr(gpr_index(r0), val);
            } else if r0.is_cr() && is_gpr(r1) {
                let val = regs.gpr(gpr_index(r1));
                match r0 {
                    Register::CR0 => v.cr0_ts = val & 8 != 0,
                    Register::CR3 => {
                        if let Err(e) = crate::hypercall::new_baseptr(v, val >> 12) {
                            log::debug!("mov to cr3 {val:#x} refused: {e}");
                            return None;
                        }
                    }
                    Register::CR4 => v.cr4_guest = val & CR4_GUEST_BITS,
                    _ => return None,
                }
            } else if r1.is_dr() && is_gpr(r0) {
                let idx = r1.number().wrapping_sub(Register::DR0.number());
                regs.set_gpr(gpr_index(r0), v.debugreg[idx.min(7)]);
            } else if r0.is_dr() && is_gpr(r1) {
                let idx = r0.number().wrapping_sub(Register::DR0.number());
                v.debugreg[idx.min(7)] = regs.gpr(gpr_index(r1));
            } else {
                return None;
            }
        }
        Mnemonic::Xsetbv if kernel => {}
        Mnemonic::Clts if kernel => v.cr0_ts = false,
        Mnemonic::Wbinvd | Mnemonic::Invd if kernel => {}
        Mnemonic::Cli | Mnemonic::Sti if io_ok => {}
        Mnemonic::In if io_ok => {
            let port = if insn.op1_kind() == OpKind::Register {
                regs.rdx & 0xffff
            } else {
                insn.immediate(1) & 0xffff
            };
            // Nothing is there (all ones), except that PIT channel 2 reads
            // as 0, as Xen's emulated PIT gives a domU: Linux's PIT-based
            // TSC calibration otherwise spins 50,000 reads of 0xff (each an
            // exit) before giving up.
            let val = if port == 0x42 { 0 } else { u64::MAX };
            reg_set(regs, insn.op0_register(), val);
        }
        Mnemonic::Out if io_ok => {}
        _ => return None,
    }
    regs.rip = next;
    Some(Action::Resume)
}

fn has_gp_handler(v: &PvVcpu) -> bool {
    v.traps[13].address != 0
}

/// Guest rdmsr. None = inject #GP.
fn read_msr(v: &PvVcpu, msr: u32) -> Option<u64> {
    Some(match msr {
        0xc000_0100 => v.fs_base,
        0xc000_0101 => v.gs_base_kernel,
        0xc000_0102 => v.gs_base_user,
        0xc000_0080 => 0xd01,
        0x277 => XEN_PAT,
        0x1b => 0xfee0_0000 | 0x800 | if v.id == 0 { 0x100 } else { 0 },
        0x10 => v.dom.platform.tsc(),
        0x1a0 => 1,
        0x3a => 1,
        0x17 | 0x8b | 0x345 | 0x179 | 0x17a | 0xc000_0103 | 0xce => 0,
        _ => {
            if has_gp_handler(v) {
                v.dom.log_once("guest rdmsr #GP", msr.into(), || {
                    format!("guest rdmsr {msr:#x}: #GP injected")
                });
                return None;
            }
            0
        }
    })
}

/// Guest wrmsr. false = inject #GP.
fn write_msr(v: &mut PvVcpu, msr: u32, val: u64) -> bool {
    let canonical = (val >> 47) == 0 || (val >> 47) == 0x1ffff;
    match msr {
        0xc000_0100 if canonical => v.fs_base = val,
        0xc000_0101 if canonical => v.gs_base_kernel = val,
        0xc000_0102 if canonical => v.gs_base_user = val,
        0xc000_0080 => {}
        0x277 | 0xc000_0103 | 0x1a0 | 0x8b | 0x79 => {}
        _ => {
            if has_gp_handler(v) {
                v.dom.log_once("guest wrmsr #GP", msr.into(), || {
                    format!("guest wrmsr {msr:#x}: #GP injected")
                });
                return false;
            }
        }
    }
    true
}

/// Writable page-table emulation for a write fault at `cr2` in kernel mode.
/// None = not a ptwr case (or refused): the fault is bounced as usual.
pub fn ptwr(v: &mut PvVcpu, regs: &mut Regs, cr2: u64) -> Option<Action> {
    let walk = guestva::walk(v.mem(), v.root_kernel, cr2, false, false).ok()?;
    if walk.l1e & pte::RW != 0 {
        return None;
    }
    let target = (walk.l1e & pte::ADDR_MASK) >> 12;
    let dom = v.dom.clone();
    if dom
        .mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .type_of(target)
        != PageType::L1
    {
        return None;
    }
    let insn = fetch(v, regs.rip)?;
    // Find the memory operand and check it hits the faulting entry.
    let mem_op = (0..insn.op_count()).find(|&i| insn.op_kind(i) == OpKind::Memory)?;
    let size = insn.memory_size().size();
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let seg_base = |r: Register| match r {
        Register::FS => v.fs_base,
        Register::GS => v.gs_base(),
        _ => 0,
    };
    let addr = insn.virtual_address(mem_op, 0, |r, _, _| {
        Some(if r.is_segment_register() {
            seg_base(r)
        } else {
            reg_get(regs, r)
        })
    })?;
    if addr & (size as u64 - 1) != 0 || addr >> 12 != cr2 >> 12 {
        return None;
    }
    let entry_gpa = (target << 12) | (addr & 0xff8);
    let shift = (addr & 7) * 8;
    let mask: u64 = if size == 8 {
        u64::MAX
    } else {
        ((1u64 << (size * 8)) - 1) << shift
    };
    let old = v.mem().read_u64(entry_gpa).ok()?;
    let old_part = (old & mask) >> shift;
    let src = |i: u32| -> Option<u64> {
        match insn.op_kind(i) {
            OpKind::Register => Some(reg_get(regs, insn.op_register(i))),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64 => Some(insn.immediate(i)),
            OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Some(insn.immediate(i)),
            _ => None,
        }
    };
    let other = if mem_op == 0 { 1 } else { 0 };
    let mut new_regs = *regs;
    let part = match insn.mnemonic() {
        Mnemonic::Mov if mem_op == 0 => src(1)?,
        Mnemonic::Xchg => {
            let r = insn.op_register(other);
            let val = reg_get(regs, r);
            reg_set(&mut new_regs, r, old_part);
            val
        }
        Mnemonic::And => old_part & src(1)?,
        Mnemonic::Or => old_part | src(1)?,
        Mnemonic::Btr | Mnemonic::Bts => {
            let bit = src(1)? & (size as u64 * 8 - 1);
            let was = (old_part >> bit) & 1;
            new_regs.rflags = (new_regs.rflags & !flags::CF) | if was == 1 { flags::CF } else { 0 };
            if insn.mnemonic() == Mnemonic::Btr {
                old_part & !(1 << bit)
            } else {
                old_part | (1 << bit)
            }
        }
        Mnemonic::Cmpxchg => {
            let acc = reg_get(
                regs,
                match size {
                    1 => Register::AL,
                    2 => Register::AX,
                    4 => Register::EAX,
                    _ => Register::RAX,
                },
            );
            const ZF: u64 = 1 << 6;
            if acc == old_part {
                new_regs.rflags |= ZF;
                src(1)?
            } else {
                new_regs.rflags &= !ZF;
                reg_set(
                    &mut new_regs,
                    match size {
                        1 => Register::AL,
                        2 => Register::AX,
                        4 => Register::EAX,
                        _ => Register::RAX,
                    },
                    old_part,
                );
                old_part
            }
        }
        _ => {
            v.dom
                .log_once("ptwr unemulated", insn.mnemonic() as u64, || {
                    format!(
                        "ptwr: unemulated instruction {:?} at {:#x}",
                        insn.mnemonic(),
                        regs.rip
                    )
                });
            return None;
        }
    };
    let new = (old & !mask) | ((part << shift) & mask);
    let index = (entry_gpa & 0xfff) / 8;
    let res = {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        mmu.mod_entry(&*dom.mem, &mut v.pt_log, target, index, new, false)
    };
    if res.is_err() {
        return None;
    }
    // Like Xen, no flush: the guest flushes after changing live entries.
    *regs = new_regs;
    regs.rip = regs.rip.wrapping_add(insn.len() as u64);
    Some(Action::Resume)
}
