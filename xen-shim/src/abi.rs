//! Constants of the Xen public ABI (x86_64 PV) that the core uses.
//!
//! Values come from Xen's public headers (`xen.h`, `arch-x86/xen-x86_64.h`,
//! `vcpu.h`, `event_channel.h`, `sched.h`, `memory.h`, `errno.h`).

/// Xen errno values (equal to Linux's), returned negated.
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const ESRCH: i64 = 3;
    pub const EAGAIN: i64 = 11;
    pub const ENOMEM: i64 = 12;
    pub const EACCES: i64 = 13;
    pub const EFAULT: i64 = 14;
    pub const EBUSY: i64 = 16;
    pub const EEXIST: i64 = 17;
    pub const EINVAL: i64 = 22;
    pub const ENOSPC: i64 = 28;
    pub const ENOSYS: i64 = 38;
    pub const ETIME: i64 = 62;
    pub const EOPNOTSUPP: i64 = 95;
}

/// Hypercall numbers.
pub mod hc {
    pub const SET_TRAP_TABLE: u64 = 0;
    pub const MMU_UPDATE: u64 = 1;
    pub const SET_GDT: u64 = 2;
    pub const STACK_SWITCH: u64 = 3;
    pub const SET_CALLBACKS: u64 = 4;
    pub const FPU_TASKSWITCH: u64 = 5;
    pub const SET_DEBUGREG: u64 = 8;
    pub const GET_DEBUGREG: u64 = 9;
    pub const UPDATE_DESCRIPTOR: u64 = 10;
    pub const MEMORY_OP: u64 = 12;
    pub const MULTICALL: u64 = 13;
    pub const UPDATE_VA_MAPPING: u64 = 14;
    pub const SET_TIMER_OP: u64 = 15;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VM_ASSIST: u64 = 21;
    pub const IRET: u64 = 23;
    pub const VCPU_OP: u64 = 24;
    pub const SET_SEGMENT_BASE: u64 = 25;
    pub const MMUEXT_OP: u64 = 26;
    pub const SCHED_OP: u64 = 29;
    pub const CALLBACK_OP: u64 = 30;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const PHYSDEV_OP: u64 = 33;
}

/// Name of a hypercall number, for logs.
pub fn hypercall_name(nr: u64) -> &'static str {
    const NAMES: [&str; 43] = [
        "set_trap_table",
        "mmu_update",
        "set_gdt",
        "stack_switch",
        "set_callbacks",
        "fpu_taskswitch",
        "sched_op_compat",
        "platform_op",
        "set_debugreg",
        "get_debugreg",
        "update_descriptor",
        "ni_11",
        "memory_op",
        "multicall",
        "update_va_mapping",
        "set_timer_op",
        "event_channel_op_compat",
        "xen_version",
        "console_io",
        "physdev_op_compat",
        "grant_table_op",
        "vm_assist",
        "update_va_mapping_otherdomain",
        "iret",
        "vcpu_op",
        "set_segment_base",
        "mmuext_op",
        "xsm_op",
        "nmi_op",
        "sched_op",
        "callback_op",
        "xenoprof_op",
        "event_channel_op",
        "physdev_op",
        "hvm_op",
        "sysctl",
        "domctl",
        "kexec_op",
        "tmem_op",
        "argo_op",
        "xenpmu_op",
        "dm_op",
        "hypfs_op",
    ];
    NAMES.get(nr as usize).copied().unwrap_or("unknown")
}

/// Flat segment selectors Xen provides to 64-bit PV guests.
pub const FLAT_RING3_CS32: u16 = 0xe023;
pub const FLAT_RING3_SS: u16 = 0xe02b;
pub const FLAT_RING3_CS64: u16 = 0xe033;
pub const FLAT_KERNEL_CS: u16 = FLAT_RING3_CS64;
pub const FLAT_KERNEL_SS: u16 = FLAT_RING3_SS;
/// Ring-0 selectors of the monitor (Xen's own, in the reserved GDT area).
pub const HYPERVISOR_CS: u16 = 0xe008;
pub const HYPERVISOR_DS: u16 = 0xe010;
pub const TSS_SELECTOR: u16 = 0xe040;
/// First GDT entry reserved for the hypervisor.
pub const FIRST_RESERVED_GDT_ENTRY: usize = 7168;

/// Reserved virtual range of 64-bit PV guests: L4 slots 256..=271.
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;
pub const RESERVED_L4_FIRST: usize = 256;
pub const RESERVED_L4_LAST: usize = 271;
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
pub const MACH2PHYS_VIRT_END: u64 = 0xffff_8040_0000_0000;

/// Xen version reported to guests (4.17).
pub const XEN_MAJOR: u32 = 4;
pub const XEN_MINOR: u32 = 17;

pub const DOMID_SELF: u64 = 0x7ff0;

/// Page-table entry bits.
pub mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    pub const PSE: u64 = 1 << 7;
    pub const PAT: u64 = 1 << 7;
    pub const G: u64 = 1 << 8;
    pub const GUEST_KERNEL: u64 = 1 << 52;
    pub const GNTTAB: u64 = 1 << 62;
    pub const NX: u64 = 1 << 63;
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// start_info flags.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;

/// VGCF flags used in the iret frame.
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// Event-channel upcall related bounce flags.
pub const TBF_EXCEPTION_ERRCODE: u32 = 2;
pub const TBF_INTERRUPT: u32 = 8;

/// Offsets inside shared_info and vcpu_info.
pub mod shinfo {
    pub const VCPU_INFO_SIZE: u64 = 64;
    pub const LEGACY_VCPUS: u32 = 32;
    pub const EVTCHN_PENDING: u64 = 0x800;
    pub const EVTCHN_MASK: u64 = 0xa00;
    pub const WC_VERSION: u64 = 0xc00;
    pub const WC_SEC: u64 = 0xc04;
    pub const WC_NSEC: u64 = 0xc08;
    pub const WC_SEC_HI: u64 = 0xc0c;
    // vcpu_info fields
    pub const UPCALL_PENDING: u64 = 0;
    pub const UPCALL_MASK: u64 = 1;
    pub const PENDING_SEL: u64 = 8;
    pub const CR2: u64 = 16;
    pub const TIME: u64 = 32;
}
