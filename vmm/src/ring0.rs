//! The ring-0 area xenkvm places in every guest's reserved L4 slots.
//!
//! It is deliberately tiny: each IDT vector and the SYSCALL entry is a single
//! `out` to a port that names the event, so every guest entry becomes an I/O
//! exit and all decisions are taken in the monitor. The way back to the guest
//! is either a direct register load (KVM_SET_REGS/SREGS) or, when page-table
//! writes or TLB flushes must happen on the vCPU, a short straight-line stub
//! generated per return (`mov imm, %rax; mov %rax, moffs`...; `iretq`).
//!
//! What differs between host kinds is chosen by [`Ring0Opts`], which
//! `crate::host_profile` derives from its probe.

use xen_shim::abi::{pte, HYPERVISOR_CS, TSS_SELECTOR};
use xen_shim::mem::{GuestMem, MemError};

use crate::layout::*;

/// TSS limit: the 104-byte TSS plus a 256-port I/O bitmap and its terminator.
pub const TSS_LIMIT: u64 = 0x68 + 33 - 1;

const PT_SUP: u64 = pte::P | pte::RW | pte::A | pte::D;

/// How the ring-0 area is built for the host below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring0Opts {
    /// SYSCALL enters LSTAR without leaving ring 3 (PVM-style hosts): the
    /// stub page is user-visible and the TSS I/O bitmap admits the stub's
    /// port. Otherwise (VT-x/AMD-V) the stub page is supervisor-only and
    /// every port faults in ring 3, as on Xen.
    pub syscall_stub_in_ring3: bool,
    /// NMI, #DF and #MC switch to their own stack (TSS IST1). Needed where
    /// the SYSCALL stub runs in ring 0 on the guest's stack.
    pub ist: bool,
    /// SYSCALL enters each vCPU's ring-0 fast paths (crate::ring0_fast):
    /// the iret and singleshot-timer hypercalls without an exit. Faults
    /// where they run take the IST2 stack.
    pub fast_paths: bool,
}

/// The vectors that get the IST stack when [`Ring0Opts::ist`] is set.
const IST_VECTORS: [u8; 3] = [2, 8, 18];
/// The vectors that get the IST2 stack with [`Ring0Opts::fast_paths`].
/// (#NP too: the IRETQ to guest user mode runs on the data page, where a
/// fault must not push its frame.)
const IST2_VECTORS: [u8; 4] = [11, 12, 13, 14];

/// STAR, LSTAR, CSTAR and FMASK for vCPU `v`: SYSCALL enters the stub (or
/// the vCPU's fast paths) with Xen's hypervisor selectors, IF/TF/DF/AC/NT/
/// IOPL cleared. SYSRETQ returns with CS 0xe033 and SS 0xe02b. SYSCALL
/// from 32-bit code (CSTAR) always takes the stub: the fast paths bounce to
/// the 64-bit syscall callback only.
pub fn syscall_msrs(v: u32, opts: Ring0Opts) -> [(u32, u64); 4] {
    let stub = MonitorLayout::r0_va(R0_STUBS) + STUB_SYSCALL_OFF;
    let lstar = if opts.fast_paths {
        crate::ring0_fast::code_va(v)
    } else {
        stub
    };
    [
        (
            0xc000_0081,
            (0xe023u64 << 48) | (u64::from(HYPERVISOR_CS) << 32),
        ),
        (0xc000_0082, lstar),
        (0xc000_0083, stub),
        (0xc000_0084, 0x4_7700),
    ]
}

/// Fill the monitor area: page tables for slots 256/257/262, the M2P, the
/// IDT, the entry stubs and every vCPU's GDT reserved page and TSS.
pub fn build(
    mem: &dyn GuestMem,
    l: &MonitorLayout,
    vcpus: u32,
    opts: Ring0Opts,
) -> Result<[u64; 16], MemError> {
    let zero = vec![0u8; (l.end - l.base) as usize];
    mem.write(l.base, &zero)?;
    // Direct map of guest RAM: 2 MiB pages, supervisor read/write.
    for g in 0..l.dm_l2_count {
        mem.write_u64(l.dm_l3 + g * 8, (l.dm_l2 + g * PAGE) | PT_SUP)?;
    }
    let mut pa = 0;
    while pa < l.ram {
        let g = pa >> 30;
        let i = (pa >> 21) & 511;
        mem.write_u64(l.dm_l2 + g * PAGE + i * 8, pa | PT_SUP | pte::PSE)?;
        pa += 2 << 20;
    }
    // M2P: identity for RAM, mapped read-only and user-readable.
    let nr = l.ram / PAGE;
    let mut m2p = vec![0u8; (l.m2p_pages * PAGE) as usize];
    for (i, c) in m2p.chunks_exact_mut(8).enumerate() {
        let v = if (i as u64) < nr { i as u64 } else { u64::MAX };
        c.copy_from_slice(&v.to_le_bytes());
    }
    mem.write(l.m2p, &m2p)?;
    let ro_user = pte::P | pte::US | pte::A;
    for k in 0..l.m2p_l2_count {
        mem.write_u64(l.m2p_l3 + k * 8, (l.m2p_l2 + k * PAGE) | ro_user | pte::RW)?;
    }
    for k in 0..l.m2p_l1_count {
        mem.write_u64(l.m2p_l2 + k * 8, (l.m2p_l1 + k * PAGE) | ro_user | pte::RW)?;
    }
    for k in 0..l.m2p_pages {
        mem.write_u64(l.m2p_l1 + k * 8, (l.m2p + k * PAGE) | ro_user | pte::NX)?;
    }
    // Ring-0 area: one L3 -> L2 -> L1 of 512 pages.
    mem.write_u64(l.r0_l3, l.r0_l2 | PT_SUP | pte::US)?;
    mem.write_u64(l.r0_l2, l.r0_l1 | PT_SUP | pte::US)?;
    for idx in 0..512u64 {
        let mut f = PT_SUP | pte::NX;
        if idx == R0_STUBS {
            // Executable and read-only; user-visible only where SYSCALL
            // enters its target without leaving ring 3.
            f = pte::P | pte::A;
            if opts.syscall_stub_in_ring3 {
                f |= pte::US;
            }
        }
        let frame = if idx == R0_SHINFO {
            l.shared_info
        } else {
            l.r0_gpa(idx)
        };
        mem.write_u64(l.r0_l1 + idx * 8, frame | f)?;
    }
    for v in 0..vcpus {
        for j in R0_JIT..R0_JIT + R0_JIT_PAGES {
            let idx = MonitorLayout::vcpu_page(v, j);
            mem.write_u64(l.r0_l1 + idx * 8, l.r0_gpa(idx) | pte::P | pte::A)?;
        }
        if opts.fast_paths {
            let idx = MonitorLayout::vcpu_page(v, R0_FAST_CODE);
            mem.write_u64(l.r0_l1 + idx * 8, l.r0_gpa(idx) | pte::P | pte::A)?;
            crate::ring0_fast::install(mem, l, v)?;
        }
    }
    write_stubs(mem, l)?;
    write_idt(mem, l, vcpus, opts)?;
    for v in 0..vcpus {
        write_vcpu_tables(mem, l, v, opts)?;
    }
    let mut slots = [0u64; 16];
    slots[SLOT_M2P - 256] = l.m2p_l3 | pte::P | pte::RW | pte::US | pte::A;
    slots[SLOT_RING0 - 256] = l.r0_l3 | PT_SUP | pte::US;
    slots[SLOT_DIRECTMAP - 256] = l.dm_l3 | PT_SUP;
    Ok(slots)
}

fn write_stubs(mem: &dyn GuestMem, l: &MonitorLayout) -> Result<(), MemError> {
    let mut page = vec![0xccu8; PAGE as usize];
    let mut put = |off: u64, port: u16| {
        let o = off as usize;
        page[o] = 0xe6; // out %al, $port
        page[o + 1] = port as u8;
        page[o + 2] = 0x0f; // ud2
        page[o + 3] = 0x0b;
    };
    put(STUB_SYSCALL_OFF, PORT_SYSCALL);
    put(STUB_SPURIOUS_OFF, PORT_SPURIOUS);
    put(STUB_UPCALL_OFF, PORT_UPCALL);
    for v in 0..32u8 {
        put(stub_vector_off(v), u16::from(v));
    }
    put(stub_vector_off(0x80), 0x80);
    // The host probe's ring-3 code: syscall; ud2. Reachable by a guest only
    // where the page is user-visible, and then it is just a system call.
    let p = STUB_PROBE_OFF as usize;
    page[p..p + 4].copy_from_slice(&[0x0f, 0x05, 0x0f, 0x0b]);
    mem.write(l.r0_gpa(R0_STUBS), &page)
}

/// A 64-bit interrupt gate to `target` in the hypervisor code segment:
/// low qword = offset[15:0] | selector << 16 | IST << 32 | (P, DPL, type 0xe)
/// << 40 | offset[31:16] << 48; high qword = offset[63:32].
fn gate(target: u64, dpl: u64, ist: u64) -> (u64, u64) {
    let lo = (target & 0xffff)
        | (u64::from(HYPERVISOR_CS) << 16)
        | (ist << 32)
        | ((0x8e | (dpl << 5)) << 40)
        | (((target >> 16) & 0xffff) << 48);
    (lo, target >> 32)
}

/// The shared IDT, and each vCPU's copy of it (with the fast paths, its
/// vector 14 enters that vCPU's #PF bounce, on IST2).
fn write_idt(
    mem: &dyn GuestMem,
    l: &MonitorLayout,
    vcpus: u32,
    opts: Ring0Opts,
) -> Result<(), MemError> {
    write_one_idt(mem, l.r0_gpa(R0_IDT), None, opts)?;
    for v in 0..vcpus {
        let pf = opts
            .fast_paths
            .then(|| crate::ring0_fast::code_va(v) + crate::ring0_fast::PF_ENTRY_OFF);
        let idt = l.r0_gpa(MonitorLayout::vcpu_page(v, R0_VCPU_IDT));
        write_one_idt(mem, idt, pf, opts)?;
    }
    Ok(())
}

/// Virtual address of vCPU `v`'s IDT.
pub fn idt_va(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_VCPU_IDT))
}

fn write_one_idt(
    mem: &dyn GuestMem,
    idt: u64,
    pf_entry: Option<u64>,
    opts: Ring0Opts,
) -> Result<(), MemError> {
    let stubs = MonitorLayout::r0_va(R0_STUBS);
    for v in 0..=255u8 {
        let (target, dpl) = match v {
            0..=31 => (
                stubs + stub_vector_off(v),
                if v == 3 || v == 4 { 3 } else { 0 },
            ),
            0x80 => (stubs + stub_vector_off(0x80), 3),
            UPCALL_VECTOR => (stubs + STUB_UPCALL_OFF, 0),
            _ => (stubs + STUB_SPURIOUS_OFF, 0),
        };
        let target = match pf_entry {
            Some(pf) if v == 14 => pf,
            _ => target,
        };
        let ist = if opts.ist && IST_VECTORS.contains(&v) {
            1
        } else if opts.fast_paths && IST2_VECTORS.contains(&v) {
            2
        } else {
            0
        };
        let (lo, hi) = gate(target, dpl, ist);
        mem.write_u64(idt + u64::from(v) * 16, lo)?;
        mem.write_u64(idt + u64::from(v) * 16 + 8, hi)?;
    }
    Ok(())
}

/// Top of vCPU `v`'s ring-0 stack (virtual).
pub fn stack_top(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_STACK + R0_STACK_PAGES))
}

/// Top of vCPU `v`'s IST1 stack (virtual).
pub fn ist_top(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_IST + R0_IST_PAGES))
}

/// Top of vCPU `v`'s IST2 stack (virtual).
pub fn ist2_top(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_IST2 + R0_IST2_PAGES))
}

pub fn gdt_va(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, 0))
}

pub fn tss_va(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_TSS))
}

fn write_vcpu_tables(
    mem: &dyn GuestMem,
    l: &MonitorLayout,
    v: u32,
    opts: Ring0Opts,
) -> Result<(), MemError> {
    // Reserved GDT page (entries 7168..): Xen's descriptors and our TSS.
    let page = l.r0_gpa(MonitorLayout::vcpu_page(v, 14));
    for sel in [0xe008u16, 0xe010, 0xe020, 0xe028, 0xe030] {
        if let Some(d) = xen_shim::descriptors::reserved_descriptor(sel) {
            // Pre-set the accessed bit so the CPU never writes the GDT.
            mem.write_u64(page + u64::from(sel - 0xe000), d | (1 << 40))?;
        }
    }
    let tss = tss_va(v);
    let lo = TSS_LIMIT | ((tss & 0xff_ffff) << 16) | (0x8bu64 << 40) | (((tss >> 24) & 0xff) << 56);
    mem.write_u64(page + u64::from(TSS_SELECTOR - 0xe000), lo)?;
    mem.write_u64(page + u64::from(TSS_SELECTOR - 0xe000) + 8, tss >> 32)?;
    // TSS: RSP0 (offset 4), IST1 (0x24), the I/O bitmap offset (0x66) and
    // the bitmap: every port faults in ring 3 as on Xen, except the SYSCALL
    // stub's where SYSCALL enters the stub without leaving ring 3.
    let tss_gpa = l.r0_gpa(MonitorLayout::vcpu_page(v, R0_TSS));
    mem.write_u64(tss_gpa + 4, stack_top(v))?;
    if opts.ist {
        mem.write_u64(tss_gpa + 0x24, ist_top(v))?;
    }
    if opts.fast_paths {
        mem.write_u64(tss_gpa + 0x2c, ist2_top(v))?;
    }
    mem.write_u16(tss_gpa + 0x66, 0x68)?;
    let mut bitmap = [0xffu8; 33];
    if opts.syscall_stub_in_ring3 {
        bitmap[usize::from(PORT_SYSCALL / 8)] &= !(1 << (PORT_SYSCALL % 8));
    }
    mem.write(tss_gpa + 0x68, &bitmap)?;
    Ok(())
}

/// Write vCPU `v`'s guest descriptors into GDT page 0 (accessed bits set).
pub fn write_guest_gdt(
    mem: &dyn GuestMem,
    l: &MonitorLayout,
    v: u32,
    gdt: &[u64],
) -> Result<(), MemError> {
    let mut buf = vec![0u8; (14 * PAGE) as usize];
    for (i, d) in gdt.iter().enumerate().take(14 * 512) {
        let d = if d & (1 << 47) != 0 && d & (1 << 44) != 0 {
            d | (1 << 40)
        } else {
            *d
        };
        buf[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    let base = l.r0_gpa(MonitorLayout::vcpu_page(v, 0));
    mem.write(base, &buf)
}

/// Straight-line return code: replays page-table writes through the direct
/// map, loads CR3 / flushes, restores RAX and IRETQs to the guest.
pub struct JitStub {
    pub code: Vec<u8>,
    /// Writes that did not fit; the stub ends with a continuation exit.
    pub rest: usize,
    /// Offset of that continuation `out` in `code`.
    pub continue_at: Option<usize>,
}

const JIT_BYTES: usize = (R0_JIT_PAGES * PAGE) as usize;

pub fn jit(writes: &[(u64, u64)], cr3: Option<u64>, invlpg: &[u64], rax: u64) -> JitStub {
    let mut c = Vec::with_capacity(256);
    let movabs = |c: &mut Vec<u8>, imm: u64| {
        c.extend_from_slice(&[0x48, 0xb8]);
        c.extend_from_slice(&imm.to_le_bytes());
    };
    let tail = 10 + 3 + 10 * invlpg.len() + 3 * invlpg.len() + 10 + 2 + 16;
    let mut done = 0;
    for &(gpa, val) in writes {
        if c.len() + 20 + tail > JIT_BYTES {
            break;
        }
        movabs(&mut c, val);
        c.extend_from_slice(&[0x48, 0xa3]);
        c.extend_from_slice(&(DIRECTMAP_VA + gpa).to_le_bytes());
        done += 1;
    }
    if done < writes.len() {
        let at = c.len();
        c.extend_from_slice(&[0xe6, PORT_JIT_CONTINUE as u8, 0x0f, 0x0b]);
        return JitStub {
            code: c,
            rest: writes.len() - done,
            continue_at: Some(at),
        };
    }
    if let Some(cr3) = cr3 {
        movabs(&mut c, cr3);
        c.extend_from_slice(&[0x0f, 0x22, 0xd8]); // mov %rax, %cr3
    }
    for &va in invlpg {
        movabs(&mut c, va);
        c.extend_from_slice(&[0x0f, 0x01, 0x38]); // invlpg (%rax)
    }
    movabs(&mut c, rax);
    c.extend_from_slice(&[0x48, 0xcf]); // iretq
    JitStub {
        code: c,
        rest: 0,
        continue_at: None,
    }
}

pub fn jit_va(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_JIT))
}

pub fn jit_gpa(l: &MonitorLayout, v: u32) -> u64 {
    l.r0_gpa(MonitorLayout::vcpu_page(v, R0_JIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jit_encodes_writes_and_iret() {
        let s = jit(&[(0x1000, 0x5023)], Some(0x4000), &[], 7);
        assert_eq!(s.rest, 0);
        assert_eq!(&s.code[..2], &[0x48, 0xb8]);
        assert_eq!(&s.code[10..12], &[0x48, 0xa3]);
        assert_eq!(&s.code[s.code.len() - 2..], &[0x48, 0xcf]);
        let many: Vec<(u64, u64)> = (0..2000).map(|i| (i * 8, i)).collect();
        let s = jit(&many, None, &[], 0);
        assert!(s.rest > 0);
        assert!(s.code.len() <= JIT_BYTES);
    }

    #[test]
    fn monitor_area_is_above_ram() {
        let l = MonitorLayout::new(256 << 20);
        assert_eq!(l.base, 256 << 20);
        assert_eq!(l.m2p_pages, 128);
        assert!(l.end > l.ring0);
    }
}
