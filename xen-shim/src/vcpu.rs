//! A PV vCPU as Xen sees it: guest mode, trap table, callbacks, roots,
//! segment bases, and the entry points the monitor calls on every trap.

use std::sync::Arc;

use crate::abi::{errno::*, shinfo, FLAT_KERNEL_CS, FLAT_KERNEL_SS, TBF_INTERRUPT};
use crate::domain::Domain;
use crate::guestva;
use crate::mmu::PtLog;
use crate::regs::{flags, Regs};

/// One virtual IDT entry (set_trap_table).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapInfo {
    pub flags: u8,
    pub address: u64,
}

/// Why the guest entered the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// SYSCALL: a hypercall in kernel mode, a system call in user mode.
    Syscall,
    /// An exception or software interrupt with its vector, error code and CR2.
    Exception {
        vector: u8,
        error: Option<u32>,
        cr2: u64,
    },
    /// The monitor interrupted the guest to deliver pending events.
    Interrupt,
}

/// What the monitor does next with this vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Resume,
    /// SCHEDOP_block: sleep until an event or timer.
    Block,
    /// SCHEDOP_yield.
    Yield,
    /// SCHEDOP_poll on these ports with an optional deadline (ns of system time).
    Poll {
        ports: Vec<u32>,
        timeout: Option<u64>,
    },
    /// SCHEDOP_shutdown with Xen's reason code.
    Shutdown(u32),
    /// The domain must be crashed (Xen's domain_crash).
    Crash(String),
    /// VCPUOP_down on ourselves.
    Down,
}

/// TLB work the vCPU must do before it resumes the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Flush {
    #[default]
    None,
    Pages(Vec<u64>),
    All,
}

impl Flush {
    pub fn add_page(&mut self, va: u64) {
        match self {
            Flush::None => *self = Flush::Pages(vec![va]),
            Flush::Pages(v) if v.len() < 32 => v.push(va),
            _ => *self = Flush::All,
        }
    }
}

/// Initial context of a secondary vCPU (VCPUOP_initialise), applied when it comes up.
#[derive(Debug, Clone, Default)]
pub struct BootContext {
    pub regs: Regs,
    pub flags: u64,
    pub traps: Vec<TrapInfo>,
    pub ldt_base: u64,
    pub ldt_ents: u64,
    pub gdt_frames: Vec<u64>,
    pub gdt_ents: u64,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    /// MFN of the kernel root (ctrlreg[3]) and of the user root (ctrlreg[1]).
    pub cr3: u64,
    pub user_root: u64,
    pub event_callback: u64,
    pub failsafe_callback: u64,
    pub syscall_callback: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
    /// Virtual IOPL from the context's RFLAGS (Linux passes IOPL 1).
    pub iopl: u32,
}

pub struct PvVcpu {
    pub id: u32,
    pub dom: Arc<Domain>,
    pub kernel_mode: bool,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    pub traps: Vec<TrapInfo>,
    pub event_callback: u64,
    pub failsafe_callback: u64,
    pub syscall_callback: u64,
    pub syscall_masks_events: bool,
    /// MFNs of the kernel and user L4 roots (0 = none).
    pub root_kernel: u64,
    pub root_user: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
    pub gs_sel_user: u16,
    pub debugreg: [u64; 8],
    pub cr0_ts: bool,
    pub cr4_guest: u64,
    pub iopl: u32,
    /// GDT: guest frames and entry count; `gdt` is the validated copy.
    pub gdt_frames: Vec<u64>,
    pub gdt: Vec<u64>,
    pub gdt_dirty: bool,
    pub ldt_base: u64,
    pub ldt_ents: u32,
    pub runstate_va: u64,
    pub vcpu_info_registered: bool,
    /// Single-shot timer deadline in system-time ns.
    pub timer_deadline: Option<u64>,
    /// Periodic timer: period and next expiry (system-time ns).
    pub periodic_ns: Option<u64>,
    pub periodic_next: Option<u64>,
    /// Work for the monitor before resuming.
    pub pt_log: PtLog,
    /// Set by a hypercall that preempted itself (Xen's
    /// hypercall_create_continuation): the arguments with which it is to be
    /// executed again. [`crate::hypercall`] turns it into a re-execution of
    /// the guest's SYSCALL, or of the multicall entry.
    pub continuation: Option<[u64; 6]>,
    pub flush: Flush,
    /// Secondary-vCPU contexts (VCPUOP_initialise) and start requests (VCPUOP_up)
    /// for the monitor to act on.
    pub pending_boot: Vec<(u32, BootContext)>,
    pub vcpus_to_up: Vec<u32>,
    /// Other vCPUs (bitmask) whose TLBs must be flushed.
    pub remote_flush: u64,
    /// Statistics.
    pub exits_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Guest entries by kind (the stats CPUID leaf's subleaf 1).
    pub entries: crate::stats::EntryCounts,
}

/// Error codes are pushed for these vectors.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

impl PvVcpu {
    pub fn new(id: u32, dom: Arc<Domain>) -> PvVcpu {
        PvVcpu {
            id,
            dom,
            kernel_mode: true,
            kernel_ss: u64::from(FLAT_KERNEL_SS),
            kernel_sp: 0,
            traps: vec![TrapInfo::default(); 256],
            event_callback: 0,
            failsafe_callback: 0,
            syscall_callback: 0,
            syscall_masks_events: false,
            root_kernel: 0,
            root_user: 0,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            gs_sel_user: 0,
            debugreg: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            cr0_ts: false,
            cr4_guest: 0,
            iopl: 0,
            gdt_frames: Vec::new(),
            gdt: Vec::new(),
            gdt_dirty: true,
            ldt_base: 0,
            ldt_ents: 0,
            runstate_va: 0,
            vcpu_info_registered: false,
            timer_deadline: None,
            periodic_ns: None,
            periodic_next: None,
            pt_log: Vec::new(),
            continuation: None,
            flush: Flush::None,
            pending_boot: Vec::new(),
            vcpus_to_up: Vec::new(),
            remote_flush: 0,
            exits_by_reason: Default::default(),
            entries: Default::default(),
        }
    }

    pub fn mem(&self) -> &dyn crate::mem::GuestMem {
        &*self.dom.mem
    }

    /// The root the vCPU runs on now.
    pub fn current_root(&self) -> u64 {
        if self.kernel_mode {
            self.root_kernel
        } else {
            self.root_user
        }
    }

    /// The active GS base.
    pub fn gs_base(&self) -> u64 {
        if self.kernel_mode {
            self.gs_base_kernel
        } else {
            self.gs_base_user
        }
    }

    pub fn vcpu_info(&self) -> u64 {
        self.dom.vcpu_info_gpa(self.id)
    }

    pub fn upcall_mask(&self) -> bool {
        self.mem()
            .read_u8(self.vcpu_info() + shinfo::UPCALL_MASK)
            .unwrap_or(1)
            != 0
    }

    pub fn set_upcall_mask(&self, masked: bool) {
        let _ = self
            .mem()
            .write_u8(self.vcpu_info() + shinfo::UPCALL_MASK, masked as u8);
    }

    pub fn upcall_pending(&self) -> bool {
        self.mem()
            .read_u8(self.vcpu_info() + shinfo::UPCALL_PENDING)
            .unwrap_or(0)
            != 0
    }

    /// The monitor took an exit of this vCPU (any return of KVM_RUN).
    pub fn note_exit(&self) {
        self.dom.exit_stats.note_exit(self.id);
    }

    fn count(&mut self, what: &'static str) {
        *self.exits_by_reason.entry(what).or_insert(0) += 1;
    }

    /// Copy a hypercall argument from guest-virtual memory (kernel root).
    pub fn copy_from(&self, va: u64, buf: &mut [u8]) -> Result<(), i64> {
        guestva::copy_from(self.mem(), self.root_kernel, va, buf).map_err(|_| -EFAULT)
    }

    pub fn copy_to(&self, va: u64, data: &[u8]) -> Result<(), i64> {
        guestva::copy_to(self.mem(), self.root_kernel, va, data).map_err(|_| -EFAULT)
    }

    pub fn read_u64(&self, va: u64) -> Result<u64, i64> {
        let mut b = [0u8; 8];
        self.copy_from(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, va: u64) -> Result<u32, i64> {
        let mut b = [0u8; 4];
        self.copy_from(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Handle one guest entry; `regs` holds the interrupted context on entry
    /// and the context to resume on return.
    pub fn handle(&mut self, entry: Entry, regs: &mut Regs) -> Action {
        let action = match entry {
            Entry::Syscall => {
                if self.kernel_mode {
                    self.entries.hypercalls += 1;
                    self.count("hypercall");
                    crate::hypercall::hypercall(self, regs)
                } else {
                    self.entries.syscalls += 1;
                    self.count("guest syscall");
                    self.bounce_syscall(regs)
                }
            }
            Entry::Interrupt => {
                self.entries.interrupts += 1;
                self.count("upcall interrupt");
                Action::Resume
            }
            Entry::Exception { vector, error, cr2 } => {
                self.entries.exceptions += 1;
                self.count(exception_name(vector));
                crate::traps::exception(self, regs, vector, error, cr2)
            }
        };
        if action == Action::Resume {
            if let Err(a) = self.deliver_events(regs) {
                return a;
            }
        }
        action
    }

    /// Switch between guest kernel and user mode (Xen's toggle_guest_mode):
    /// the active GS base and root follow `kernel_mode`.
    pub fn toggle_mode(&mut self) {
        self.kernel_mode = !self.kernel_mode;
    }

    /// SYSCALL from guest user mode: bounce to the registered syscall callback.
    fn bounce_syscall(&mut self, regs: &mut Regs) -> Action {
        if self.syscall_callback == 0 {
            regs.rip = regs.rip.wrapping_sub(2);
            return crate::traps::bounce(self, regs, 6, None, 0);
        }
        // The interrupted context as Xen records it: RIP/RFLAGS from RCX/R11.
        regs.rip = regs.rcx;
        regs.rflags = regs.r11;
        regs.cs = FLAT_KERNEL_CS | 3;
        regs.ss = FLAT_KERNEL_SS | 3;
        let cb = self.syscall_callback;
        let fl = if self.syscall_masks_events {
            TBF_INTERRUPT
        } else {
            0
        };
        match crate::traps::create_bounce_frame(self, regs, cb, None, fl) {
            Ok(()) => {
                regs.rflags &= !flags::DF;
                Action::Resume
            }
            Err(a) => a,
        }
    }

    /// Deliver a pending, unmasked event upcall (checked before every resume).
    pub fn deliver_events(&mut self, regs: &mut Regs) -> Result<(), Action> {
        if self.event_callback == 0 || !self.upcall_pending() || self.upcall_mask() {
            return Ok(());
        }
        self.count("event upcall");
        let cb = self.event_callback;
        crate::traps::create_bounce_frame(self, regs, cb, None, TBF_INTERRUPT)
    }

    /// Raise VIRQ_TIMER for expired timers; returns the next expiry.
    pub fn run_timers(&mut self, now: u64) -> Option<u64> {
        let mut fire = false;
        if self.timer_deadline.is_some_and(|d| d <= now) {
            self.timer_deadline = None;
            fire = true;
        }
        if let (Some(p), Some(n)) = (self.periodic_ns, self.periodic_next) {
            if n <= now {
                // Guest-chosen period: saturate rather than overflow.
                let missed = ((now - n) / p.max(1)).saturating_add(1);
                self.periodic_next = Some(n.saturating_add(missed.saturating_mul(p)));
                fire = true;
            }
        }
        if fire {
            self.raise_virq(crate::evtchn::VIRQ_TIMER);
        }
        self.next_timer()
    }

    /// The earliest pending timer expiry.
    pub fn next_timer(&self) -> Option<u64> {
        match (self.timer_deadline, self.periodic_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Raise a VIRQ bound on this vCPU.
    pub fn raise_virq(&self, virq: u32) {
        let port = {
            let ev = self.dom.evtchn.lock().unwrap_or_else(|e| e.into_inner());
            ev.virq_port(self.id, virq)
        };
        if let Some(p) = port {
            crate::evtchn::set_pending(self.mem(), self.dom.shared_info_gpa(), self.vcpu_info(), p);
        }
    }
}

pub fn exception_name(v: u8) -> &'static str {
    const N: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "coproc", "#TS", "#NP",
        "#SS", "#GP", "#PF", "vec15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "vec22", "vec23",
        "vec24", "vec25", "vec26", "vec27", "#HV", "#VC", "#SX", "vec31",
    ];
    N.get(v as usize).copied().unwrap_or("int")
}

/// Guest-virtual `va + off` for a field or element of a hypercall argument,
/// or -EFAULT when that passes the top of the address space.
pub use crate::guestva::field;
