//! The x86_64 PV domain builder, laid out as Xen's libxenguest does it
//! (`xc_dom_build_image` / `alloc_pgtables_pv` / `start_info_x86_64`).

use xen_shim::abi::{pte, SIF_MOD_START_PFN};
use xen_shim::mem::GuestMem;
use xen_shim::mmu::{Mmu, PtLog};

use crate::loader::PvKernel;

const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("guest memory too small: the kernel, initrd and boot structures need {need} MiB, the guest has {have} MiB")]
    TooSmall { need: u64, have: u64 },
    #[error(
        "the initial mapping would exceed 1 GiB ({0:#x} bytes); give the kernel a smaller initrd"
    )]
    MappingTooLarge(u64),
    #[error("writing guest memory: {0}")]
    Mem(#[from] xen_shim::mem::MemError),
    #[error("validating the initial page tables failed (Xen error {0})")]
    Validate(i64),
    #[error("command line is {0} bytes; Xen allows at most 1023")]
    CmdlineTooLong(usize),
    #[error(
        "the initial mapping {start:#x}..{end:#x} (kernel and boot structures) is not \
         canonical or overlaps Xen's reserved 0xffff800000000000..0xffff880000000000"
    )]
    BadMapping { start: u64, end: u64 },
}

/// Where the builder put everything (pfns unless noted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLayout {
    pub virt_base: u64,
    pub kernel_pfn: u64,
    pub kernel_pages: u64,
    pub start_info_pfn: u64,
    pub store_pfn: u64,
    pub console_pfn: u64,
    pub pt_pfn: u64,
    pub nr_pt_frames: u64,
    pub stack_pfn: u64,
    pub virt_pgtab_end: u64,
    pub initrd_pfn: u64,
    pub initrd_pages: u64,
    pub p2m_pfn: u64,
    pub p2m_pages: u64,
    pub p2m_tables: u64,
    pub p2m_va: u64,
    pub entry: u64,
    pub rsp: u64,
    pub rsi: u64,
}

/// Number of page tables (L4 + L3s + L2s + L1s) mapping [start, end].
fn count_tables(start: u64, end: u64) -> (u64, u64, u64) {
    let n = |shift: u32| (end >> shift) - (start >> shift) + 1;
    (n(39), n(30), n(21))
}

/// Is `[start, last]` canonical, in one half, and clear of Xen's hole?
fn mappable(start: u64, last: u64) -> bool {
    const LOW_END: u64 = 1 << 47;
    const HOLE: std::ops::Range<u64> = 0xffff_8000_0000_0000..0xffff_8800_0000_0000;
    if last < LOW_END {
        start <= last
    } else {
        start >= HOLE.end && start <= last
    }
}

/// Compute the layout without touching memory.
pub fn plan(k: &PvKernel, initrd_len: u64, nr_pages: u64) -> Result<PvLayout, BuildError> {
    let vb = k.notes.virt_base;
    let mut cursor = (k.virt_kend - vb).div_ceil(PAGE);
    let kernel_pfn = (k.virt_kstart - vb) / PAGE;
    let kernel_pages = cursor - kernel_pfn;
    let initrd_pages = initrd_len.div_ceil(PAGE);
    let take = |n: u64, cursor: &mut u64| {
        let p = *cursor;
        *cursor += n;
        p
    };
    let mut initrd_pfn = 0;
    if !k.notes.mod_start_pfn && initrd_pages > 0 {
        initrd_pfn = take(initrd_pages, &mut cursor);
    }
    let p2m_pages = (nr_pages * 8).div_ceil(PAGE);
    let init_p2m = k.notes.init_p2m.filter(|&a| a % PAGE == 0 && a < vb);
    let mut p2m_pfn = 0;
    if init_p2m.is_none() {
        p2m_pfn = take(p2m_pages, &mut cursor);
    }
    let start_info_pfn = take(1, &mut cursor);
    let store_pfn = take(1, &mut cursor);
    let console_pfn = take(1, &mut cursor);
    // Page-table count, iterated as Xen's count_pgtables does.
    let extra = 1 + (512 * 1024) / PAGE;
    // The kernel's range was checked by the loader, but what follows it may
    // still run past the top of the address space (a kernel linked there).
    let past_top = || BuildError::BadMapping {
        start: vb,
        end: u64::MAX,
    };
    let cur_va = cursor
        .checked_mul(PAGE)
        .and_then(|o| vb.checked_add(o))
        .ok_or_else(past_top)?;
    if cur_va - vb > 1 << 30 {
        return Err(BuildError::MappingTooLarge(cur_va - vb));
    }
    let mut pages = extra;
    let (tables, try_end) = loop {
        let try_end = cur_va
            .checked_add(pages * PAGE)
            .and_then(|e| e.checked_next_multiple_of(4 << 20))
            .ok_or_else(past_top)?
            - 1;
        let (l3, l2, l1) = count_tables(vb, try_end);
        let tables = 1 + l3 + l2 + l1;
        if tables + extra <= pages {
            break (tables, try_end);
        }
        pages += 1;
    };
    if try_end + 1 - vb > 1 << 30 {
        return Err(BuildError::MappingTooLarge(try_end + 1 - vb));
    }
    if !mappable(vb, try_end) {
        return Err(BuildError::BadMapping {
            start: vb,
            end: try_end + 1,
        });
    }
    let pt_pfn = take(tables, &mut cursor);
    let stack_pfn = take(1, &mut cursor);
    let virt_pgtab_end = try_end + 1;
    cursor = (virt_pgtab_end - vb) / PAGE;
    if k.notes.mod_start_pfn && initrd_pages > 0 {
        initrd_pfn = take(initrd_pages, &mut cursor);
    }
    let mut p2m_tables = 0;
    let p2m_va = match init_p2m {
        Some(va) => {
            p2m_pfn = take(p2m_pages, &mut cursor);
            let l1 = p2m_pages.div_ceil(512);
            let l2 = l1.div_ceil(512);
            p2m_tables = 1 + l2 + l1;
            take(p2m_tables, &mut cursor);
            va
        }
        None => vb + p2m_pfn * PAGE,
    };
    if cursor > nr_pages {
        return Err(BuildError::TooSmall {
            need: (cursor * PAGE).div_ceil(1 << 20) + 16,
            have: (nr_pages * PAGE) >> 20,
        });
    }
    Ok(PvLayout {
        virt_base: vb,
        kernel_pfn,
        kernel_pages,
        start_info_pfn,
        store_pfn,
        console_pfn,
        pt_pfn,
        nr_pt_frames: tables,
        stack_pfn,
        virt_pgtab_end,
        initrd_pfn,
        initrd_pages,
        p2m_pfn,
        p2m_pages,
        p2m_tables,
        p2m_va,
        entry: k.entry,
        rsp: vb + (stack_pfn + 1) * PAGE,
        rsi: vb + start_info_pfn * PAGE,
    })
}

/// Everything the builder needs besides the kernel.
pub struct BuildInput<'a> {
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    pub nr_pages: u64,
    pub shared_info_gpa: u64,
    pub console_port: u32,
    pub store_port: u32,
}

const L1_FLAGS: u64 = pte::P | pte::RW | pte::A;
const LN_FLAGS: u64 = pte::P | pte::RW | pte::US | pte::A | pte::D;

/// Load the kernel, lay out the boot structures and pin the initial L4.
pub fn build(
    mem: &dyn GuestMem,
    mmu: &mut Mmu,
    k: &PvKernel,
    input: &BuildInput,
) -> Result<PvLayout, BuildError> {
    if input.cmdline.len() > 1023 {
        return Err(BuildError::CmdlineTooLong(input.cmdline.len()));
    }
    let l = plan(k, input.initrd.len() as u64, input.nr_pages)?;
    // Kernel segments at their physical placement.
    let dest = l.kernel_pfn * PAGE;
    for s in &k.segments {
        let at = dest + (s.paddr - k.pstart);
        mem.write(at, &s.data)?;
        let zeros = s.memsz.saturating_sub(s.data.len() as u64);
        if zeros > 0 {
            mem.write(at + s.data.len() as u64, &vec![0u8; zeros as usize])?;
        }
    }
    if let Some(hp) = k.notes.hypercall_page {
        let pfn = (hp - l.virt_base) / PAGE;
        mem.write(pfn * PAGE, &hypercall_page())?;
    }
    if !input.initrd.is_empty() {
        mem.write(l.initrd_pfn * PAGE, input.initrd)?;
    }
    // Identity p2m.
    let p2m: Vec<u8> = (0..input.nr_pages).flat_map(|i| i.to_le_bytes()).collect();
    mem.write(l.p2m_pfn * PAGE, &p2m)?;
    // Initial page tables, laid out L4, L3s, L2s, L1s.
    let vb = l.virt_base;
    let end = l.virt_pgtab_end - 1;
    let (n3, n2, n1) = count_tables(vb, end);
    let l4 = l.pt_pfn;
    let l3_0 = l4 + 1;
    let l2_0 = l3_0 + n3;
    let l1_0 = l2_0 + n2;
    let pt_end = l.pt_pfn + l.nr_pt_frames;
    let e = |pfn: u64, f: u64| (pfn << 12) | f;
    for i in 0..n3 {
        let va = ((vb >> 39) + i) << 39;
        mem.write_u64(l4 * PAGE + ((va >> 39) & 511) * 8, e(l3_0 + i, LN_FLAGS))?;
    }
    for i in 0..n2 {
        let va = ((vb >> 30) + i) << 30;
        let l3 = l3_0 + ((va >> 39) - (vb >> 39));
        mem.write_u64(l3 * PAGE + ((va >> 30) & 511) * 8, e(l2_0 + i, LN_FLAGS))?;
    }
    for i in 0..n1 {
        let va = ((vb >> 21) + i) << 21;
        let l2 = l2_0 + ((va >> 30) - (vb >> 30));
        mem.write_u64(l2 * PAGE + ((va >> 21) & 511) * 8, e(l1_0 + i, LN_FLAGS))?;
    }
    let nr_mapped = (l.virt_pgtab_end - vb) / PAGE;
    let mut l1s = vec![0u8; (n1 * PAGE) as usize];
    let first = vb >> 21 << 21;
    for pfn in 0..nr_mapped {
        let va = vb + pfn * PAGE;
        let slot = ((va - first) / PAGE) as usize;
        let ro = pfn >= l.pt_pfn && pfn < pt_end;
        let f = if ro { L1_FLAGS & !pte::RW } else { L1_FLAGS };
        l1s[slot * 8..slot * 8 + 8].copy_from_slice(&e(pfn, f).to_le_bytes());
    }
    mem.write(l1_0 * PAGE, &l1s)?;
    // The p2m mapping at INIT_P2M with its own (unmapped) tables.
    if l.p2m_tables > 0 {
        let t3 = l.p2m_pfn + l.p2m_pages;
        let nl1 = l.p2m_pages.div_ceil(512);
        let nl2 = nl1.div_ceil(512);
        let t2 = t3 + 1;
        let t1 = t2 + nl2;
        let va = l.p2m_va;
        mem.write_u64(l4 * PAGE + ((va >> 39) & 511) * 8, e(t3, LN_FLAGS))?;
        for i in 0..nl2 {
            mem.write_u64(
                t3 * PAGE + (((va >> 30) + i) & 511) * 8,
                e(t2 + i, LN_FLAGS),
            )?;
        }
        for i in 0..nl1 {
            let l2 = t2 + i / 512;
            mem.write_u64(
                l2 * PAGE + (((va >> 21) + i) & 511) * 8,
                e(t1 + i, LN_FLAGS),
            )?;
        }
        for p in 0..l.p2m_pages {
            let l1 = t1 + p / 512;
            mem.write_u64(
                l1 * PAGE + (((va >> 12) + p) & 511) * 8,
                e(l.p2m_pfn + p, L1_FLAGS),
            )?;
        }
    }
    // start_info.
    let si = l.start_info_pfn * PAGE;
    let mut b = vec![0u8; PAGE as usize];
    b[..14].copy_from_slice(b"xen-3.0-x86_64");
    let put =
        |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut b, 0x20, input.nr_pages);
    put(&mut b, 0x28, input.shared_info_gpa);
    let flags = if k.notes.mod_start_pfn && !input.initrd.is_empty() {
        SIF_MOD_START_PFN
    } else {
        0
    };
    b[0x30..0x34].copy_from_slice(&flags.to_le_bytes());
    put(&mut b, 0x38, l.store_pfn);
    b[0x40..0x44].copy_from_slice(&input.store_port.to_le_bytes());
    put(&mut b, 0x48, l.console_pfn);
    b[0x50..0x54].copy_from_slice(&input.console_port.to_le_bytes());
    put(&mut b, 0x58, vb + l.pt_pfn * PAGE);
    put(&mut b, 0x60, l.nr_pt_frames);
    put(&mut b, 0x68, l.p2m_va);
    if !input.initrd.is_empty() {
        let ms = if flags != 0 {
            l.initrd_pfn
        } else {
            vb + l.initrd_pfn * PAGE
        };
        put(&mut b, 0x70, ms);
        put(&mut b, 0x78, l.initrd_pages * PAGE);
    }
    b[0x80..0x80 + input.cmdline.len()].copy_from_slice(input.cmdline.as_bytes());
    if l.p2m_tables > 0 {
        put(&mut b, 0x480, l.p2m_pfn);
        put(&mut b, 0x488, l.p2m_pages + l.p2m_tables);
    }
    mem.write(si, &b)?;
    mem.write(l.store_pfn * PAGE, &[0u8; 4096])?;
    let mut cons = vec![0u8; PAGE as usize];
    cons[0xc10] = 1;
    mem.write(l.console_pfn * PAGE, &cons)?;
    mem.write(l.stack_pfn * PAGE, &[0u8; 4096])?;
    // The monitor writes the xenstore and console rings for the domain's
    // whole life (as blkback/netback do their rings): both pages hold a
    // writable type reference, never dropped, so the guest cannot make
    // either of them a page table.
    let mut log: PtLog = Vec::new();
    for pfn in [l.store_pfn, l.console_pfn] {
        mmu.get_type(mem, &mut log, pfn, xen_shim::mmu::PageType::Writable)
            .map_err(BuildError::Validate)?;
    }
    // Pin the L4 as Xen's builder does; the validation rewrites entries.
    mmu.pin(mem, &mut log, l4, 4)
        .map_err(BuildError::Validate)?;
    Ok(l)
}

/// A hypercall page as Xen writes it (for kernels that still use one).
pub fn hypercall_page() -> Vec<u8> {
    let mut p = vec![0xccu8; PAGE as usize];
    for i in 0..128u32 {
        let o = (i * 32) as usize;
        let mut code = vec![0x51, 0x41, 0x53];
        if i == 23 {
            code.push(0x50);
            code.push(0xb8);
            code.extend_from_slice(&i.to_le_bytes());
            code.extend_from_slice(&[0x0f, 0x05]);
        } else {
            code.push(0xb8);
            code.extend_from_slice(&i.to_le_bytes());
            code.extend_from_slice(&[0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]);
        }
        p[o..o + code.len()].copy_from_slice(&code);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_shim::mem::VecMem;

    /// pv-boot.md §2.2: Debian 6.1.0-56, 256 MiB, 1.5 MiB initrd.
    #[test]
    fn layout_matches_the_worked_example() {
        let Some(bytes) = crate::loader::test_kernel() else {
            return;
        };
        let k = crate::loader::load_pv_kernel(&bytes).unwrap();
        let l = plan(&k, 0x180000, 0x10000).unwrap();
        assert_eq!(l.kernel_pfn, 0x1000);
        assert_eq!(l.kernel_pfn + l.kernel_pages, 0x3e00);
        assert_eq!(l.start_info_pfn, 0x3e00);
        assert_eq!(l.store_pfn, 0x3e01);
        assert_eq!(l.console_pfn, 0x3e02);
        assert_eq!(l.pt_pfn, 0x3e03);
        assert_eq!(l.nr_pt_frames, 35);
        assert_eq!(l.stack_pfn, 0x3e26);
        assert_eq!(l.rsp, 0xffff_ffff_83e2_7000);
        assert_eq!(l.rsi, 0xffff_ffff_83e0_0000);
        assert_eq!(l.virt_pgtab_end, 0xffff_ffff_8400_0000);
        assert_eq!((l.initrd_pfn, l.initrd_pages), (0x4000, 384));
        assert_eq!((l.p2m_pfn, l.p2m_pages, l.p2m_tables), (0x4180, 128, 3));
        assert_eq!(l.p2m_va, 0x80_0000_0000);
        assert_eq!(l.entry, k.notes.entry);
    }

    #[test]
    fn build_writes_start_info_and_pins_the_tables() {
        let Some(bytes) = crate::loader::test_kernel() else {
            return;
        };
        let k = crate::loader::load_pv_kernel(&bytes).unwrap();
        let nr_pages = 0x10000;
        let mem = VecMem::new((nr_pages * PAGE) as usize);
        let mut mmu = Mmu::new(nr_pages);
        let initrd = vec![0x5a; 0x180000];
        let input = BuildInput {
            initrd: &initrd,
            cmdline: "console=hvc0",
            nr_pages,
            shared_info_gpa: nr_pages * PAGE,
            console_port: 2,
            store_port: 1,
        };
        let l = build(&mem, &mut mmu, &k, &input).unwrap();
        let si = l.start_info_pfn * PAGE;
        let mut magic = [0u8; 14];
        mem.read(si, &mut magic).unwrap();
        assert_eq!(&magic, b"xen-3.0-x86_64");
        assert_eq!(mem.read_u64(si + 0x20).unwrap(), nr_pages);
        assert_eq!(mem.read_u32(si + 0x30).unwrap(), SIF_MOD_START_PFN);
        assert_eq!(mem.read_u64(si + 0x58).unwrap(), 0xffff_ffff_83e0_3000);
        assert_eq!(mem.read_u64(si + 0x60).unwrap(), 35);
        assert_eq!(mem.read_u64(si + 0x70).unwrap(), 0x4000);
        assert_eq!(mem.read_u64(si + 0x480).unwrap(), 0x4180);
        assert_eq!(mem.read_u64(si + 0x488).unwrap(), 131);
        assert_eq!(mem.read_u8(si + 0x80).unwrap(), b'c');
        // The L4 is pinned; its tables are typed and mapped read-only.
        assert_eq!(mmu.type_of(l.pt_pfn), xen_shim::mmu::PageType::L4);
        assert_eq!(mmu.type_of(l.pt_pfn + 3), xen_shim::mmu::PageType::L1);
        // The L1 entry mapping the L4 itself: read-only, with Xen's US|bit-52.
        let l1 = (l.pt_pfn + 3 + l.pt_pfn / 512) * PAGE;
        let e = mem.read_u64(l1 + (l.pt_pfn % 512) * 8).unwrap();
        assert_eq!(e & pte::RW, 0);
        assert_ne!(e & pte::US, 0);
        assert_ne!(e & pte::GUEST_KERNEL, 0);
        assert_eq!(e & pte::ADDR_MASK, l.pt_pfn * PAGE);
        // The console ring starts "disconnected" and the p2m is the identity.
        assert_eq!(mem.read_u8(l.console_pfn * PAGE + 0xc10).unwrap(), 1);
        assert_eq!(mem.read_u64(l.p2m_pfn * PAGE + 0x1234 * 8).unwrap(), 0x1234);
    }

    /// Issue 12 item 2: the monitor writes the xenstore and console rings
    /// for the domain's whole life, so both pages hold a writable type
    /// reference from the start: a guest that unmaps one and pins it as a
    /// page table is refused.
    #[test]
    fn store_and_console_pages_can_never_become_page_tables() {
        use crate::loader::testutil::{build_elf, linux_notes, NotesIn};
        use xen_shim::mmu::PageType;
        let k = crate::loader::load_pv_kernel(&build_elf(&linux_notes(None), NotesIn::Segment))
            .unwrap();
        let nr_pages = 0x2000;
        let mem = VecMem::new((nr_pages * PAGE) as usize);
        let mut mmu = Mmu::new(nr_pages);
        let input = BuildInput {
            initrd: &[],
            cmdline: "",
            nr_pages,
            shared_info_gpa: nr_pages * PAGE,
            console_port: 2,
            store_port: 1,
        };
        let l = build(&mem, &mut mmu, &k, &input).unwrap();
        let mut log = Vec::new();
        for pfn in [l.store_pfn, l.console_pfn] {
            // The guest drops its own mapping of the page...
            let w = xen_shim::guestva::walk(&mem, l.pt_pfn, l.virt_base + pfn * PAGE, false, false)
                .unwrap();
            mmu.mod_entry(
                &mem,
                &mut log,
                w.l1e_addr >> 12,
                (w.l1e_addr & 0xfff) / 8,
                0,
                false,
            )
            .unwrap();
            // ...but the page stays writable and cannot be pinned.
            assert_eq!(mmu.type_of(pfn), PageType::Writable, "pfn {pfn:#x}");
            for level in 1..=4 {
                assert!(
                    mmu.pin(&mem, &mut log, pfn, level).is_err(),
                    "pfn {pfn:#x} L{level}"
                );
            }
        }
    }

    /// A freestanding kernel (no VIRT_BASE: 0) linked at 1 MiB: mapped 1:1
    /// from VA 0, its boot structures after it, its hypercall page filled.
    #[test]
    fn freestanding_kernel_at_1_mib() {
        use crate::loader::testutil::{build_freestanding, freestanding_notes, LOW_TEXT};
        let k = crate::loader::load_pv_kernel(&build_freestanding(&freestanding_notes(), None))
            .unwrap();
        let nr_pages = 0x4000;
        let mem = VecMem::new((nr_pages * PAGE) as usize);
        let mut mmu = Mmu::new(nr_pages);
        let input = BuildInput {
            initrd: &[],
            cmdline: "hello",
            nr_pages,
            shared_info_gpa: nr_pages * PAGE,
            console_port: 2,
            store_port: 1,
        };
        let l = build(&mem, &mut mmu, &k, &input).unwrap();
        assert_eq!(l.virt_base, 0);
        assert_eq!((l.kernel_pfn, l.kernel_pages), (0x100, 3));
        // No INIT_P2M: the p2m list follows the kernel, inside the mapping.
        assert_eq!((l.p2m_pfn, l.p2m_pages, l.p2m_tables), (0x103, 32, 0));
        assert_eq!(l.p2m_va, 0x10_3000);
        assert_eq!(l.start_info_pfn, 0x123);
        assert_eq!(l.entry, LOW_TEXT);
        assert_eq!(l.rsi, 0x12_3000);
        assert_eq!(l.rsp, (l.stack_pfn + 1) * PAGE);
        assert_eq!(l.virt_pgtab_end, 0x40_0000);
        // The hypercall page: entry 17 is `push rcx; push r11; mov $17, %eax; syscall`.
        let mut stub = [0u8; 10];
        mem.read(LOW_TEXT + 0x1000 + 17 * 32, &mut stub).unwrap();
        assert_eq!(stub, [0x51, 0x41, 0x53, 0xb8, 17, 0, 0, 0, 0x0f, 0x05]);
        // The kernel's own bytes are at their physical address, mapped 1:1.
        let w = xen_shim::guestva::walk(&mem, l.pt_pfn, LOW_TEXT + 0x10, false, false).unwrap();
        assert_eq!(w.gpa, LOW_TEXT + 0x10);
        assert_eq!(mem.read_u8(LOW_TEXT + 1).unwrap(), 5);
        // VA 0 maps pfn 0 (Mini-OS uses the page), through L4 slot 0.
        assert_eq!(
            xen_shim::guestva::walk(&mem, l.pt_pfn, 0, true, false)
                .unwrap()
                .gpa,
            0
        );
        let si = l.start_info_pfn * PAGE;
        assert_eq!(mem.read_u64(si + 0x58).unwrap(), l.pt_pfn * PAGE);
        assert_eq!(mem.read_u64(si + 0x68).unwrap(), 0x10_3000);
        assert_eq!(mem.read_u64(si + 0x480).unwrap(), 0);
    }

    #[test]
    fn a_mapping_past_the_top_or_into_the_hole_is_refused() {
        use crate::loader::testutil::{build_freestanding, freestanding_notes, xen, LOW_TEXT};
        let with_base = |vb: u64| {
            let mut n = freestanding_notes();
            n.extend(xen(3, &vb.to_le_bytes())); // VIRT_BASE
            n.extend(xen(1, &(vb + LOW_TEXT).to_le_bytes())); // ENTRY
            n.extend(xen(2, &(vb + LOW_TEXT).to_le_bytes())); // HYPERCALL_PAGE
            crate::loader::load_pv_kernel(&build_freestanding(&n, None)).unwrap()
        };
        // The kernel fits below 2^47, its boot structures do not.
        let k = with_base(0x7fff_fffe_0000 - LOW_TEXT - 0x3000);
        assert!(matches!(
            plan(&k, 0, 0x4000),
            Err(BuildError::BadMapping { .. })
        ));
        // The kernel ends just below 2^64.
        let k = with_base(0xffff_ffff_fffe_0000 - LOW_TEXT - 0x3000);
        assert!(matches!(
            plan(&k, 0, 0x4000),
            Err(BuildError::BadMapping { .. })
        ));
        // An ordinary high base is fine.
        plan(&with_base(0xffff_ffff_8000_0000), 0, 0x4000).unwrap();
    }

    #[test]
    fn too_little_memory_is_refused() {
        let Some(bytes) = crate::loader::test_kernel() else {
            return;
        };
        let k = crate::loader::load_pv_kernel(&bytes).unwrap();
        assert!(matches!(
            plan(&k, 0, 0x3000),
            Err(BuildError::TooSmall { .. })
        ));
    }
}
