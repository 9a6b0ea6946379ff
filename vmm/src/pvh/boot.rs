//! The PVH boot: the ELF vmlinux loaded at its physical addresses and its
//! `XEN_ELFNOTE_PHYS32_ENTRY` found by linux-loader, `hvm_start_info`
//! (memory map, command line, the initrd as first module) written by
//! linux-loader's PVH configurator, and the 32-bit entry state of Xen's
//! PVH ABI (docs/misc/pvh.pandoc).

use std::io::Cursor;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const PAGE: u64 = 4096;
/// Where hvm_start_info, its module list, memory map and command line go
/// (low RAM, below where Linux looks for its shared_info page's use).
const START_INFO: u64 = 0x6000;
const MODLIST: u64 = 0x6040;
const MEMMAP: u64 = 0x7000;
const CMDLINE: u64 = 0x8000;
/// The longest command line taken (Linux's COMMAND_LINE_SIZE is 2048).
pub const MAX_CMDLINE: usize = 2047;
/// Guest RAM ends below the 32-bit PCI hole: 3 GiB at most, for now.
pub const MAX_RAM: u64 = 3 << 30;
/// Grant-table frames the domain may map (XENMEM_add_to_physmap).
pub const GRANT_FRAMES: u32 = 32;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    Loader(#[from] crate::loader::LoaderError),
    #[error("loading the ELF kernel: {0}")]
    Elf(String),
    #[error(
        "the kernel has no PVH entry point (Xen ELF note PHYS32_ENTRY): it cannot boot as PVH"
    )]
    NoPvhEntry,
    #[error("the kernel ({kernel_end:#x}) and initrd ({initrd} bytes) do not fit in {ram} MiB")]
    TooSmall {
        kernel_end: u64,
        initrd: u64,
        ram: u64,
    },
    #[error("the command line is longer than {MAX_CMDLINE} bytes")]
    Cmdline,
    #[error("writing hvm_start_info: {0}")]
    StartInfo(String),
    #[error("writing guest memory: {0}")]
    Memory(String),
}

/// The PVH domain's guest-physical layout: RAM from 0, then the special
/// pages (console and xenstore rings, reserved in the memory map), then
/// monitor pages the guest sees only where it maps them.
#[derive(Debug, Clone, Copy)]
pub struct PvhLayout {
    pub ram: u64,
    pub console_gpa: u64,
    pub store_gpa: u64,
    /// The ACPI tables (RSDP first).
    pub acpi_gpa: u64,
    /// Where the Xen core keeps shared_info until the guest places it.
    pub scratch_shared_info: u64,
    pub grant_gpa: u64,
    pub end: u64,
}

impl PvhLayout {
    pub fn new(ram: u64) -> PvhLayout {
        let console_gpa = ram;
        let store_gpa = ram + PAGE;
        let acpi_gpa = ram + 2 * PAGE;
        let scratch_shared_info = ram + 3 * PAGE;
        let grant_gpa = ram + 4 * PAGE;
        PvhLayout {
            ram,
            console_gpa,
            store_gpa,
            acpi_gpa,
            scratch_shared_info,
            grant_gpa,
            end: grant_gpa + u64::from(GRANT_FRAMES) * PAGE,
        }
    }

    /// The special pages the guest sees (console, xenstore, ACPI): one slot.
    pub fn special(&self) -> (u64, u64) {
        (self.console_gpa, 3 * PAGE)
    }

    /// The memory map of hvm_start_info (Linux adds the ISA hole itself).
    pub fn memmap(&self) -> Vec<(u64, u64, u32)> {
        let (sp, sp_len) = self.special();
        vec![
            (0, 0xa0000, E820_RAM),
            (0x10_0000, self.ram - 0x10_0000, E820_RAM),
            (sp, sp_len, E820_RESERVED),
        ]
    }
}

/// What the boot vCPU starts with.
pub struct Entry {
    pub rip: u64,
    pub start_info: u64,
}

/// Load `vmlinux` (ELF), `initrd` and `cmdline` into `mem` for a PVH boot.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &PvhLayout,
    vcpus: u32,
    vmlinux: &[u8],
    initrd: &[u8],
    cmdline: &str,
) -> Result<Entry, BootError> {
    if cmdline.len() > MAX_CMDLINE || cmdline.contains('\0') {
        return Err(BootError::Cmdline);
    }
    let r = Elf::load(mem, None, &mut Cursor::new(vmlinux), None)
        .map_err(|e| BootError::Elf(e.to_string()))?;
    let PvhBootCapability::PvhEntryPresent(entry) = r.pvh_boot_cap else {
        return Err(BootError::NoPvhEntry);
    };
    let too_small = || BootError::TooSmall {
        kernel_end: r.kernel_end,
        initrd: initrd.len() as u64,
        ram: layout.ram >> 20,
    };
    if r.kernel_end > layout.ram {
        return Err(too_small());
    }
    let w = |gpa: u64, data: &[u8]| {
        mem.write_slice(data, GuestAddress(gpa))
            .map_err(|e| BootError::Memory(e.to_string()))
    };
    w(
        layout.acpi_gpa,
        &super::acpi::tables(layout.acpi_gpa, vcpus),
    )?;
    let mut cl = cmdline.as_bytes().to_vec();
    cl.push(0);
    w(CMDLINE, &cl)?;
    let mut modules = Vec::new();
    if !initrd.is_empty() {
        // At the top of RAM, page-aligned, above the kernel.
        let len = initrd.len() as u64;
        let at = layout.ram.checked_sub(len).ok_or_else(too_small)? & !(PAGE - 1);
        if at < r.kernel_end.next_multiple_of(PAGE) {
            return Err(too_small());
        }
        w(at, initrd)?;
        modules.push(hvm_modlist_entry {
            paddr: at,
            size: len,
            ..Default::default()
        });
    }
    let memmap: Vec<hvm_memmap_table_entry> = layout
        .memmap()
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST },
        cmdline_paddr: CMDLINE,
        rsdp_paddr: layout.acpi_gpa,
        memmap_paddr: MEMMAP,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    let mut params = BootParams::new(&info, GuestAddress(START_INFO));
    params.set_sections(&memmap, GuestAddress(MEMMAP));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(MODLIST));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| BootError::StartInfo(e.to_string()))?;
    Ok(Entry {
        rip: entry.0,
        start_info: START_INFO,
    })
}

fn seg(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The PVH entry state: 32-bit protected mode, paging off, flat 4 GiB code
/// and data segments, a busy 32-bit TSS, EBX = hvm_start_info.
pub fn entry_state(sregs: &mut kvm_sregs, e: &Entry) -> kvm_regs {
    sregs.cs = seg(0x10, 0xb);
    let data = seg(0x18, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: 0x20,
        type_: 0xb,
        present: 1,
        s: 0,
        g: 0,
        db: 0,
        ..seg(0x20, 0xb)
    };
    sregs.ldt = kvm_segment {
        selector: 0,
        type_: 0x2,
        present: 1,
        s: 0,
        limit: 0xffff,
        unusable: 1,
        db: 0,
        g: 0,
        ..seg(0, 0x2)
    };
    sregs.cr0 = 0x11; // PE, ET
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    kvm_regs {
        rip: e.rip,
        rbx: e.start_info,
        rflags: 0x2,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn the_debian_kernel_loads_with_its_pvh_entry() {
        let Some(bz) = crate::loader::test_kernel() else {
            return;
        };
        let elf = crate::loader::vmlinux(&bz).unwrap();
        let layout = PvhLayout::new(192 << 20);
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), layout.end as usize)]).unwrap();
        let initrd = vec![0x5a; 3 * 4096 + 17];
        let e = load(&mem, &layout, 1, &elf, &initrd, "console=hvc0").unwrap();
        assert!((0x100_0000..0x200_0000).contains(&e.rip), "{:#x}", e.rip);
        let info: hvm_start_info = mem.read_obj(GuestAddress(START_INFO)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!((info.version, info.flags, info.nr_modules), (1, 0, 1));
        assert_eq!(info.memmap_entries, 3);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(m.size, initrd.len() as u64);
        assert_eq!(m.paddr % PAGE, 0);
        assert!(m.paddr + m.size <= layout.ram);
        let mut b = [0u8; 13];
        mem.read_slice(&mut b, GuestAddress(info.cmdline_paddr))
            .unwrap();
        assert_eq!(&b, b"console=hvc0\0");
        assert!(mem.last_addr().0 >= layout.end - 1);
    }

    #[test]
    fn a_command_line_too_long_or_a_kernel_too_big_is_refused() {
        let layout = PvhLayout::new(1 << 20);
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), layout.end as usize)]).unwrap();
        let long = "x".repeat(MAX_CMDLINE + 1);
        assert!(matches!(
            load(&mem, &layout, 1, b"\x7fELF", &[], &long),
            Err(BootError::Cmdline)
        ));
        assert!(matches!(
            load(&mem, &layout, 1, b"not an elf", &[], ""),
            Err(BootError::Elf(_))
        ));
    }
}
