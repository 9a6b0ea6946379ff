//! One KVM vCPU running a PV guest vCPU: the exit loop that turns the
//! ring-0 stubs' port exits into `xen_shim` entries and resumes the guest.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use std::os::fd::AsRawFd;

use kvm_ioctls::{VcpuExit, VcpuFd};

/// `_IOW(KVMIO, 0x86, struct kvm_interrupt)`
const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;
use xen_shim::abi::{HYPERVISOR_CS, HYPERVISOR_DS};
use xen_shim::domain::Platform;
use xen_shim::regs::Regs;
use xen_shim::vcpu::{has_error_code, Action, Entry, Flush, PvVcpu};

use crate::host_profile::HostProfile;
use crate::kvm_regs::RegSync;
use crate::layout::*;
use crate::platform::{Host, VcpuSignal};
use crate::ring0;
use crate::ring0_fast;

/// A KVM exit, copied out of `kvm_run`.
enum Exit {
    Out(u16),
    In,
    IrqWindow,
    Other(String),
}

/// How a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEnd {
    Shutdown(u32),
    Crash(String),
    Stopped,
    Down,
}

thread_local! {
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int) {
    IMMEDIATE_EXIT.with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: points into this thread's kvm_run mapping.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    });
}

/// Point this thread's kick handler at its `kvm_run.immediate_exit` (null:
/// none), for vCPU loops other than [`Vcpu::run`] (PVH).
pub(crate) fn set_kick_target(p: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(p));
}

pub fn install_kick_handler() {
    // SAFETY: installing a signal handler that only does a volatile store.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        sa.sa_flags = 0;
        libc::sigaction(crate::platform::KICK_SIGNAL, &sa, std::ptr::null_mut());
    }
}

pub struct Vcpu {
    pub fd: VcpuFd,
    pub pv: PvVcpu,
    pub host: Arc<Host>,
    pub mon: Arc<MonitorLayout>,
    pub signal: Arc<VcpuSignal>,
    pub profile: &'static HostProfile,
    /// CR3 currently loaded on the hardware vCPU.
    active_cr3: u64,
    /// Page-table writes still to replay (JIT continuation).
    pending_writes: Vec<(u64, u64)>,
    pending_tail: Option<(Option<u64>, Vec<u64>, u64)>,
    /// Address of the continuation `out` of the JIT chunk now on the vCPU.
    jit_continue: Option<u64>,
    /// The guest context the JIT stub now on the vCPU returns to.
    jit_guest: Option<Regs>,
    /// Special registers read at the last exit, reused on resume.
    sregs: Option<kvm_sregs>,
    /// An upcall interrupt is queued in KVM.
    upcall_irq: bool,
    /// A flush request seen on the way into KVM_RUN was acted on (one
    /// immediate exit, as a kick); cleared when the request is taken.
    flush_poked: bool,
    /// Starts secondary vCPUs (set while the vCPU thread runs).
    pub starter: Option<Arc<crate::smp::Starter>>,
    /// CR4 bits beyond base_sregs' (OSXSAVE for a guest restored from a
    /// host that gave it XSAVE: migrate::restore).
    pub cr4_extra: u64,
    pub exits: u64,
    /// Register access (through `kvm_run` where the host allows).
    pub regs: RegSync,
    /// The ring-0 fast paths run on this vCPU (crate::ring0_fast).
    fast: bool,
    /// After VCPUOP_down: where VCPUOP_up resumes it (returning from the
    /// hypercall, as Xen does).
    pub down_regs: Option<Regs>,
}

/// A KVM segment register loaded from descriptor `d` (accessed bit set).
pub fn seg_from_desc(sel: u16, d: u64) -> kvm_segment {
    let limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = ((d >> 55) & 1) as u8;
    kvm_segment {
        base: xen_shim::descriptors::descriptor_base(d),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: sel,
        type_: ((d >> 40) & 0xf) as u8 | 1,
        present: ((d >> 47) & 1) as u8,
        dpl: ((d >> 45) & 3) as u8,
        db: ((d >> 54) & 1) as u8,
        s: ((d >> 44) & 1) as u8,
        l: ((d >> 53) & 1) as u8,
        g,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn canonical(va: u64) -> bool {
    matches!(va >> 47, 0 | 0x1ffff)
}

/// Set the architectural state common to every entry of vCPU `id`
/// (GDT/IDT/TR/CRs): CR0 = PG|AM|WP|NE|ET|MP|PE, CR4 = OSXMMEXCPT|OSFXSR|PAE,
/// EFER = NXE|LMA|LME|SCE.
pub fn base_sregs(s: &mut kvm_sregs, id: u32) {
    s.cr0 = 0x8005_0033;
    s.cr4 = 0x620;
    s.efer = 0xd01;
    s.gdt.base = ring0::gdt_va(id);
    s.gdt.limit = (GDT_PAGES * PAGE - 1) as u16;
    s.idt.base = ring0::idt_va(id);
    s.idt.limit = 256 * 16 - 1;
    s.tr = kvm_segment {
        base: ring0::tss_va(id),
        limit: ring0::TSS_LIMIT as u32,
        selector: xen_shim::abi::TSS_SELECTOR,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    s.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
}

impl Vcpu {
    pub fn new(
        mut fd: VcpuFd,
        pv: PvVcpu,
        host: Arc<Host>,
        mon: Arc<MonitorLayout>,
        profile: &'static HostProfile,
        vcpus: u32,
    ) -> Vcpu {
        let signal = host.vcpus[pv.id as usize].clone();
        let regs = RegSync::new(&mut fd, profile.sync_regs);
        Vcpu {
            fd,
            pv,
            host,
            mon,
            signal,
            profile,
            jit_continue: None,
            jit_guest: None,
            active_cr3: 0,
            pending_writes: Vec::new(),
            pending_tail: None,
            sregs: None,
            upcall_irq: false,
            flush_poked: false,
            cr4_extra: 0,
            starter: None,
            down_regs: None,
            exits: 0,
            regs,
            fast: profile.ring0_for(vcpus).fast_paths,
        }
    }

    fn seg(&self, sel: u16) -> Option<kvm_segment> {
        xen_shim::descriptors::lookup(&self.pv, sel).map(|d| seg_from_desc(sel, d))
    }

    fn gregs(regs: &kvm_regs) -> Regs {
        Regs {
            rax: regs.rax,
            rbx: regs.rbx,
            rcx: regs.rcx,
            rdx: regs.rdx,
            rsi: regs.rsi,
            rdi: regs.rdi,
            rbp: regs.rbp,
            rsp: regs.rsp,
            r8: regs.r8,
            r9: regs.r9,
            r10: regs.r10,
            r11: regs.r11,
            r12: regs.r12,
            r13: regs.r13,
            r14: regs.r14,
            r15: regs.r15,
            rip: regs.rip,
            rflags: regs.rflags,
            cs: 0,
            ss: 0,
        }
    }

    fn kregs(g: &Regs) -> kvm_regs {
        kvm_regs {
            rax: g.rax,
            rbx: g.rbx,
            rcx: g.rcx,
            rdx: g.rdx,
            rsi: g.rsi,
            rdi: g.rdi,
            rbp: g.rbp,
            rsp: g.rsp,
            r8: g.r8,
            r9: g.r9,
            r10: g.r10,
            r11: g.r11,
            r12: g.r12,
            r13: g.r13,
            r14: g.r14,
            r15: g.r15,
            rip: g.rip,
            rflags: g.rflags,
        }
    }

    /// Load `g` as the guest context, via the JIT stub when page-table
    /// writes or flushes must happen on the vCPU.
    pub fn resume(&mut self, g: &Regs) -> Result<(), String> {
        if self.fast {
            self.tell_fast_paths()?;
        }
        let mem = &*self.pv.dom.mem;
        if self.pv.gdt_dirty {
            ring0::write_guest_gdt(mem, &self.mon, self.pv.id, &self.pv.gdt)
                .map_err(|e| e.to_string())?;
            self.pv.gdt_dirty = false;
        }
        let cr3 = self.pv.current_root() << 12;
        if self.signal.flush.swap(false, Ordering::SeqCst) {
            self.pv.flush = Flush::All;
        }
        self.flush_poked = false;
        let flush = std::mem::take(&mut self.pv.flush);
        let writes = std::mem::take(&mut self.pv.pt_log);
        let mut s = match self.sregs.take() {
            Some(s) => s,
            None => self.regs.get_sregs(&self.fd).map_err(|e| e.to_string())?,
        };
        base_sregs(&mut s, self.pv.id);
        s.cr4 |= self.cr4_extra;
        s.fs.base = self.pv.fs_base;
        s.gs.base = self.pv.gs_base();
        if writes.is_empty() && flush == Flush::None {
            let cs = self
                .seg(g.cs)
                .ok_or_else(|| format!("bad guest CS {:#x}", g.cs))?;
            let ss = self
                .seg(g.ss)
                .ok_or_else(|| format!("bad guest SS {:#x}", g.ss))?;
            s.cs = cs;
            s.ss = ss;
            s.cr3 = cr3;
            self.active_cr3 = cr3;
            self.regs
                .set_sregs(&self.fd, &s)
                .map_err(|e| e.to_string())?;
            self.regs
                .set_regs(&self.fd, &Self::kregs(g))
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        // The ring-0 path: replay, flush, iretq.
        let cr3_load = if flush == Flush::All || cr3 != self.active_cr3 {
            Some(cr3)
        } else {
            None
        };
        let pages = match flush {
            Flush::Pages(p) if cr3_load.is_none() => p,
            _ => Vec::new(),
        };
        let frame = ring0::stack_top(self.pv.id) - 40;
        let stack_gpa = self.mon.r0_gpa(MonitorLayout::vcpu_page(
            self.pv.id,
            R0_STACK + R0_STACK_PAGES,
        )) - 40;
        for (i, w) in [g.rip, u64::from(g.cs), g.rflags, g.rsp, u64::from(g.ss)]
            .iter()
            .enumerate()
        {
            mem.write_u64(stack_gpa + i as u64 * 8, *w)
                .map_err(|e| e.to_string())?;
        }
        s.cs = seg_from_desc(HYPERVISOR_CS, 0x00af_9b00_0000_ffff);
        s.ss = seg_from_desc(HYPERVISOR_DS, 0x00cf_9300_0000_ffff);
        // The stub runs on the active root; a vCPU that never ran has none
        // yet and runs it on the new one (every validated L4 maps the
        // ring-0 area). That happens when a TLB flush was requested of a
        // vCPU before it first ran.
        s.cr3 = if self.active_cr3 != 0 {
            self.active_cr3
        } else {
            cr3
        };
        self.regs
            .set_sregs(&self.fd, &s)
            .map_err(|e| e.to_string())?;
        self.pending_writes = writes;
        self.pending_tail = Some((cr3_load, pages, g.rax));
        self.jit_guest = Some(*g);
        if cr3_load.is_some() {
            self.active_cr3 = cr3;
            // The stub's CR3 load (CR4.PGE is clear, no PCIDs) flushes the
            // whole TLB before the guest runs again.
            self.pv.dom.tlb.note_flush(self.pv.id);
        }
        let mut k = Self::kregs(g);
        k.rsp = frame;
        k.rflags = 2;
        self.regs
            .set_regs(&self.fd, &k)
            .map_err(|e| e.to_string())?;
        self.write_jit_chunk()
    }

    fn write_jit_chunk(&mut self) -> Result<(), String> {
        let (cr3, pages, rax) = self.pending_tail.clone().unwrap_or((None, Vec::new(), 0));
        let stub = ring0::jit(&self.pending_writes, cr3, &pages, rax);
        let done = self.pending_writes.len() - stub.rest;
        self.pending_writes.drain(..done);
        let gpa = ring0::jit_gpa(&self.mon, self.pv.id);
        self.pv
            .dom
            .mem
            .write(gpa, &stub.code)
            .map_err(|e| e.to_string())?;
        if stub.rest == 0 {
            self.pending_tail = None;
        }
        self.jit_continue = stub
            .continue_at
            .map(|o| ring0::jit_va(self.pv.id) + o as u64);
        let mut k = self.regs.get_regs(&self.fd).map_err(|e| e.to_string())?;
        k.rip = ring0::jit_va(self.pv.id);
        self.regs.set_regs(&self.fd, &k).map_err(|e| e.to_string())
    }

    /// Decode an exit on `port` into the guest context and an entry.
    fn entry(&mut self, port: u16) -> Result<Option<(Entry, Regs)>, String> {
        let (k, s) = self.read_state()?;
        let stubs = MonitorLayout::r0_va(R0_STUBS);
        let mut g = Self::gregs(&k);
        // Where the `out` that exited is (the host profile knows whether
        // KVM reports it or the instruction after it).
        let at = self.profile.out_insn(k.rip);
        let fast_out =
            self.fast && at == ring0_fast::code_va(self.pv.id) + ring0_fast::SLOW_OUT_OFF;
        if port == PORT_SYSCALL
            && (at == stubs + STUB_SYSCALL_OFF || fast_out)
            && s.cs.dpl == self.profile.syscall_cpl
        {
            g.rsp = k.rsp;
            let (cs, ss) = if self.pv.kernel_mode {
                (0xe033, 0xe02b)
            } else {
                (0x33, 0x2b)
            };
            g.cs = cs;
            g.ss = ss;
            return Ok(Some((Entry::Syscall, g)));
        }
        let vector = if port < 32 || port == 0x80 {
            port as u8
        } else {
            0xff
        };
        let fast_pf_out = self.fast
            && vector == 14
            && at == ring0_fast::code_va(self.pv.id) + ring0_fast::PF_OUT_OFF;
        if vector != 0xff && (at == stubs + stub_vector_off(vector) || fast_pf_out) {
            let err = self.read_frame(&k, &s, &mut g, has_error_code(vector) && vector < 32)?;
            let cs = g.cs;
            if cs & 3 == 0 && self.fast && ring0_fast::may_fault_at(self.pv.id, g.rip) {
                return self.fast_path_fault(&k, vector, g.rip).map(Some);
            }
            if cs & 3 == 0 {
                return Err(format!(
                    "{} in monitor ring-0 code at {:#x} (err {:?}, cr2 {:#x})",
                    xen_shim::vcpu::exception_name(vector),
                    g.rip,
                    err,
                    s.cr2
                ));
            }
            return Ok(Some((
                Entry::Exception {
                    vector,
                    error: err,
                    cr2: s.cr2,
                },
                g,
            )));
        }
        if port == PORT_UPCALL && at == stubs + STUB_UPCALL_OFF {
            self.upcall_irq = false;
            let mut g = Self::gregs(&k);
            self.read_frame(&k, &s, &mut g, false)?;
            if g.cs & 3 == 0 {
                // Taken inside our own ring-0 code (its final iretq): go back
                // there; the upcall is retried on the next chance.
                let mut back = k;
                back.rip = g.rip;
                back.rsp = g.rsp;
                back.rflags = g.rflags;
                self.regs
                    .set_regs(&self.fd, &back)
                    .map_err(|e| e.to_string())?;
                self.sregs = None;
                return Ok(None);
            }
            return Ok(Some((Entry::Interrupt, g)));
        }
        if port == PORT_JIT_CONTINUE && Some(at) == self.jit_continue {
            self.write_jit_chunk()?;
            return Ok(None);
        }
        // A guest `out` outside our stubs (possible in ring 3 on PVM-style
        // hosts): the write is dropped, as Xen does for a domU.
        // Keyed by port only: the address is guest-chosen.
        self.pv.dom.log_once("guest port write", port.into(), || {
            format!("guest port write {port:#x} at {:#x} ignored", k.rip)
        });
        Ok(None)
    }

    /// A fault inside the ring-0 fast paths (a guest stack that is not
    /// mapped or not writable, a selector the CPU refuses): redo the
    /// SYSCALL the slow way, from the registers the code saved on entry.
    fn fast_path_fault(
        &mut self,
        k: &kvm_regs,
        vector: u8,
        rip: u64,
    ) -> Result<(Entry, Regs), String> {
        if rip == ring0_fast::code_va(self.pv.id) + ring0_fast::USER_IRETQ_OFF {
            // The return to user mode was committed; the CPU refused the
            // guest's user selectors (as loading them would on the slow path).
            return Err(format!(
                "{} returning to guest user mode: the guest's user code or stack selector is unusable",
                xen_shim::vcpu::exception_name(vector)
            ));
        }
        if ring0_fast::in_pf_code(self.pv.id, rip) {
            // The #PF bounce could not write the guest's frame: the first
            // #PF, as the code found it, goes the slow way.
            let p = ring0_fast::saved_pf(&*self.pv.dom.mem, &self.mon, self.pv.id)
                .map_err(|e| e.to_string())?;
            log::trace!(
                "vCPU {}: {} in the ring-0 #PF bounce at {rip:#x}: slow path",
                self.pv.id,
                xen_shim::vcpu::exception_name(vector)
            );
            let mut g = Self::gregs(k);
            g.rax = p.rax;
            g.rcx = p.rcx;
            g.rdx = p.rdx;
            g.r11 = p.r11;
            g.rip = p.rip;
            g.cs = p.cs as u16;
            g.rflags = p.rflags;
            g.rsp = p.rsp;
            g.ss = p.ss as u16;
            let entry = Entry::Exception {
                vector: 14,
                error: Some(p.err as u32),
                cr2: p.cr2,
            };
            return Ok((entry, g));
        }
        let [rax, rcx, r11, rsp, rdx] =
            ring0_fast::saved_entry(&*self.pv.dom.mem, &self.mon, self.pv.id)
                .map_err(|e| e.to_string())?;
        log::trace!(
            "vCPU {}: {} in the ring-0 fast path at {rip:#x}: slow path",
            self.pv.id,
            xen_shim::vcpu::exception_name(vector)
        );
        let mut g = Self::gregs(k);
        g.rax = rax;
        g.rcx = rcx;
        g.r11 = r11;
        g.rsp = rsp;
        g.rdx = rdx;
        (g.cs, g.ss) = if self.pv.kernel_mode {
            (0xe033, 0xe02b)
        } else {
            (0x33, 0x2b)
        };
        Ok((Entry::Syscall, g))
    }

    /// Tell the fast paths the guest's state before every entry: the mode,
    /// where vcpu_info is (in RAM, through the ring-0 direct map; in
    /// shared_info, through its ring-0 mapping; elsewhere the iret and
    /// bounce paths are off), the page tables, kernel stack, syscall
    /// callback and the GS base of each mode. The code changes the mode
    /// and the GS bases itself: [`Self::take_fast_mode`] reads them back.
    fn tell_fast_paths(&mut self) -> Result<(), String> {
        let info = self.pv.vcpu_info();
        let shinfo = self.mon.shared_info;
        let vcpu_info = if info + 64 <= self.mon.ram {
            DIRECTMAP_VA + info
        } else if (shinfo..shinfo + PAGE - 63).contains(&info) {
            MonitorLayout::r0_va(R0_SHINFO) + (info - shinfo)
        } else {
            0
        };
        let pv = &self.pv;
        let t = ring0_fast::Told {
            vcpu_info,
            kernel_mode: pv.kernel_mode,
            user_cr3: pv.root_user << 12,
            kernel_cr3: pv.root_kernel << 12,
            kernel_sp: pv.kernel_sp,
            kernel_ss: pv.kernel_ss,
            syscall_cb: pv.syscall_callback,
            masks_events: pv.syscall_masks_events,
            gs_user: pv.gs_base_user,
            gs_kernel: pv.gs_base_kernel,
            // A handler the final IRETQ would refuse takes the slow path.
            pf_handler: match pv.traps.get(14) {
                Some(t) if ring0_fast::pf_bounce_enabled() && canonical(t.address) => t.address,
                _ => 0,
            },
            pf_masks_events: pv.traps.get(14).is_some_and(|t| t.flags & 4 != 0),
        };
        ring0_fast::tell(&*pv.dom.mem, &self.mon, pv.id, &t).map_err(|e| e.to_string())
    }

    /// The mode the ring-0 code left the guest in (it returns to user mode
    /// and bounces user SYSCALLs to the kernel without an exit): the mode
    /// and the GS base of the mode not running. The running mode's GS base
    /// and the page tables are read from the vCPU ([`Self::sync_segments`]).
    fn take_fast_mode(&mut self) {
        if !self.fast || self.pending_tail.is_some() {
            return;
        }
        let Ok(m) = ring0_fast::mode(&*self.pv.dom.mem, &self.mon, self.pv.id) else {
            return;
        };
        self.pv.kernel_mode = m.kernel_mode;
        self.pv.kernel_sp = m.kernel_sp;
        self.pv.kernel_ss = m.kernel_ss;
        if m.kernel_mode {
            self.pv.gs_base_user = m.gs_user;
        } else {
            self.pv.gs_base_kernel = m.gs_kernel;
        }
    }

    /// A singleshot timer the guest set in ring 0 since the last exit
    /// becomes the vCPU's (before anything at this exit can replace it).
    fn take_fast_deadline(&mut self) {
        if self.fast {
            if let Some(d) = ring0_fast::take_deadline(&*self.pv.dom.mem, &self.mon, self.pv.id) {
                self.pv.timer_deadline = Some(d);
                self.signal.fast_taken.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Hypercalls done in ring 0 since the last call, for the monitor's
    /// counts (the vCPU is stopped: nothing counts behind our back).
    pub fn fast_path_counts(&self) -> [(&'static str, u64); 7] {
        let d = ring0_fast::data_gpa(&self.mon, self.pv.id);
        let mem = &*self.pv.dom.mem;
        let n = |o| {
            if !self.fast {
                return 0;
            }
            let v = mem.read_u64(d + o).unwrap_or(0);
            let _ = mem.write_u64(d + o, 0);
            v
        };
        [
            ("iret (ring 0)", n(ring0_fast::N_IRET)),
            (
                "vcpu_op set_singleshot_timer (ring 0)",
                n(ring0_fast::N_TIMER),
            ),
            ("iret to user mode (ring 0)", n(ring0_fast::N_IRET_USER)),
            ("guest syscall bounce (ring 0)", n(ring0_fast::N_BOUNCE)),
            ("stack_switch (ring 0)", n(ring0_fast::N_STACK)),
            ("set_segment_base (ring 0)", n(ring0_fast::N_SEGBASE)),
            ("page fault bounce (ring 0)", n(ring0_fast::N_PF)),
        ]
    }

    /// The stopped vCPU's registers, its segment bases taken as the truth
    /// ([`Self::sync_segments`]).
    fn read_state(&mut self) -> Result<(kvm_regs, kvm_sregs), String> {
        let k = self.regs.get_regs(&self.fd).map_err(|e| e.to_string())?;
        let s = self.regs.get_sregs(&self.fd).map_err(|e| e.to_string())?;
        self.sync_segments(&s);
        Ok((k, s))
    }

    /// Read the context the CPU saved on our ring-0 stack when it took an
    /// exception or interrupt into `g`; returns the error code if any.
    fn read_frame(
        &self,
        k: &kvm_regs,
        s: &kvm_sregs,
        g: &mut Regs,
        errcode: bool,
    ) -> Result<Option<u32>, String> {
        if s.cs.dpl != 0 {
            return Err(format!(
                "exception stub reached outside ring 0 (cs {:#x})",
                s.cs.selector
            ));
        }
        // The frame is on the ring-0 stack, or on the IST stack for NMI,
        // #DF and #MC (hardware hosts).
        let id = self.pv.id;
        let stacks = [
            (
                ring0::stack_top(id),
                R0_STACK + R0_STACK_PAGES,
                R0_STACK_PAGES,
            ),
            (ring0::ist_top(id), R0_IST + R0_IST_PAGES, R0_IST_PAGES),
            (ring0::ist2_top(id), R0_IST2 + R0_IST2_PAGES, R0_IST2_PAGES),
        ];
        let Some((top_gpa, off)) = stacks.iter().find_map(|&(top_va, top_page, pages)| {
            let off = top_va.wrapping_sub(k.rsp);
            (40..=pages * PAGE)
                .contains(&off)
                .then(|| (self.mon.r0_gpa(MonitorLayout::vcpu_page(id, top_page)), off))
        }) else {
            return Err(format!("ring-0 stack pointer {:#x} out of range", k.rsp));
        };
        let fa = top_gpa - off;
        let mem = &*self.pv.dom.mem;
        let r = |i: u64| mem.read_u64(fa + i * 8).unwrap_or(0);
        let (err, base) = if errcode {
            (Some(r(0) as u32), 1)
        } else {
            (None, 0)
        };
        g.rip = r(base);
        g.cs = r(base + 1) as u16;
        g.rflags = r(base + 2);
        g.rsp = r(base + 3);
        g.ss = r(base + 4) as u16;
        Ok(err)
    }

    /// The guest loads FS/GS natively (`mov %fs`), which may change their
    /// bases behind our back: take the hardware values as the truth.
    fn sync_segments(&mut self, s: &kvm_sregs) {
        if self.pending_tail.is_some() {
            return;
        }
        if self.fast {
            // The ring-0 code switches page tables with the mode.
            self.active_cr3 = s.cr3;
        }
        self.pv.fs_base = s.fs.base;
        if self.pv.kernel_mode {
            self.pv.gs_base_kernel = s.gs.base;
        } else {
            self.pv.gs_base_user = s.gs.base;
        }
        self.sregs = Some(*s);
    }

    fn now_ns(&self) -> u64 {
        self.pv.dom.clock.now_ns(self.pv.dom.platform.tsc())
    }

    /// Fire an expired timer, sync the deadline for the timer thread.
    fn timers(&mut self) {
        let now = self.now_ns();
        let d = self.pv.run_timers(now).unwrap_or(u64::MAX);
        if self.signal.deadline.swap(d, Ordering::SeqCst) != d {
            let _g = self.signal.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.signal.cv.notify_all();
        }
    }

    fn events_deliverable(&self) -> bool {
        self.pv.upcall_pending() && !self.pv.upcall_mask()
    }

    fn block(&mut self, poll: Option<&[u32]>) {
        let host = self.host.clone();
        let _blocked = host.control.blocked_guard(self.pv.id);
        loop {
            self.timers();
            if self.host.stop.load(Ordering::SeqCst) || self.events_deliverable() {
                return;
            }
            if let Some(ports) = poll {
                let si = self.pv.dom.shared_info_gpa();
                if ports
                    .iter()
                    .any(|&p| xen_shim::evtchn::is_pending(self.pv.mem(), si, p))
                {
                    return;
                }
            }
            let now = self.now_ns();
            let wait = self
                .pv
                .next_timer()
                .map(|d| d.saturating_sub(now))
                .unwrap_or(50_000_000)
                .min(50_000_000);
            let g = self.signal.lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.signal.kicked.swap(false, Ordering::SeqCst) {
                continue;
            }
            let _ = self
                .signal
                .cv
                .wait_timeout(g, Duration::from_nanos(wait.max(1000)));
            self.signal.kicked.store(false, Ordering::SeqCst);
        }
    }

    /// Run until the guest shuts down, crashes or the monitor stops.
    pub fn run(&mut self, g: Regs) -> VcpuEnd {
        // SAFETY: pthread_self has no preconditions.
        *self.signal.thread.lock().unwrap_or_else(|e| e.into_inner()) =
            unsafe { libc::pthread_self() } as u64;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.signal.tid.store(tid as u32, Ordering::SeqCst);
        let end = self.run_inner(g);
        self.signal.tid.store(0, Ordering::SeqCst);
        *self.signal.thread.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
        end
    }

    fn run_inner(&mut self, mut g: Regs) -> VcpuEnd {
        let ie = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        IMMEDIATE_EXIT.with(|p| p.set(ie));
        if let Err(e) = self.resume(&g) {
            return VcpuEnd::Crash(e);
        }
        loop {
            if self.host.stop.load(Ordering::SeqCst) {
                // Another vCPU suspended the domain: keep this one's state.
                crate::migrate::save::keep_stopped(self);
                return VcpuEnd::Stopped;
            }
            if self.host.control.is_paused() {
                // `xenkvm pause`: wait at the gate, then re-check stop.
                self.host.control.wait_unpaused(&self.host.stop);
                continue;
            }
            self.regs.before_run(&mut self.fd);
            self.signal.in_guest.store(true, Ordering::SeqCst);
            if !self.flush_poked && self.signal.flush.load(Ordering::SeqCst) {
                // A flush request raced with our way in (see
                // Host::flush_tlbs): leave at once, as if kicked, so that
                // async_event arranges for it to be taken. Once only: the
                // guest must then run to take the upcall interrupt.
                self.flush_poked = true;
                self.fd.set_kvm_immediate_exit(1);
            }
            let exit = match self.fd.run() {
                Ok(VcpuExit::IoOut(port, _)) => Ok(Exit::Out(port)),
                Ok(VcpuExit::IoIn(_port, data)) => {
                    data.iter_mut().for_each(|b| *b = 0xff);
                    Ok(Exit::In)
                }
                Ok(VcpuExit::IrqWindowOpen) => Ok(Exit::IrqWindow),
                Ok(other) => Ok(Exit::Other(format!("{other:?}"))),
                Err(e) => Err(e),
            };
            self.signal.in_guest.store(false, Ordering::SeqCst);
            self.regs.after_run(&mut self.fd);
            self.take_fast_mode();
            self.take_fast_deadline();
            self.exits += 1;
            self.pv.note_exit();
            let port = match exit {
                Ok(Exit::Out(port)) => port,
                Ok(Exit::In) => continue,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    self.signal.kicked.store(false, Ordering::SeqCst);
                    if let Err(e) = self.async_event() {
                        return VcpuEnd::Crash(e);
                    }
                    continue;
                }
                Ok(Exit::IrqWindow) => {
                    if let Err(e) = self.async_event() {
                        return VcpuEnd::Crash(e);
                    }
                    continue;
                }
                Ok(Exit::Other(other)) => {
                    return VcpuEnd::Crash(format!("unexpected KVM exit: {other}"))
                }
                Err(e) => return VcpuEnd::Crash(format!("KVM_RUN failed: {e}")),
            };
            let (entry, mut regs) = match self.entry(port) {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => return VcpuEnd::Crash(e),
            };
            log::trace!(
                "entry {entry:?} at {:#x} (cs {:#x} rsp {:#x})",
                regs.rip,
                regs.cs,
                regs.rsp
            );
            let action = self.pv.handle(entry, &mut regs);
            self.after_handle();
            match action {
                Action::Resume => {}
                Action::Yield => {
                    if let Some(dom) = self.host.domain.get().and_then(std::sync::Weak::upgrade) {
                        self.host.console_drain(&dom);
                    }
                    std::thread::yield_now();
                }
                Action::Block => {
                    self.block(None);
                    if let Err(a) = self.pv.deliver_events(&mut regs) {
                        return self.end(a);
                    }
                }
                Action::Poll { ports, .. } => {
                    self.block(Some(&ports));
                    if let Err(a) = self.pv.deliver_events(&mut regs) {
                        return self.end(a);
                    }
                }
                Action::Down => {
                    self.down_regs = Some(regs);
                    return VcpuEnd::Down;
                }
                Action::Shutdown(crate::migrate::SHUTDOWN_SUSPEND) => {
                    crate::migrate::save::keep_suspended(self, &regs);
                    return VcpuEnd::Shutdown(crate::migrate::SHUTDOWN_SUSPEND);
                }
                other => return self.end(other),
            }
            // The checks below answer every kick so far (the events raised,
            // the timers run here): a KVM_RUN that returned at once for one
            // of them would be an exit for nothing, on every wake from
            // SCHEDOP_block. Kicks from here on set it again. (Stop, pause
            // and TLB-flush requests are checked before KVM_RUN anyway.)
            self.fd.set_kvm_immediate_exit(0);
            self.signal.kicked.store(false, Ordering::SeqCst);
            self.timers();
            if self.events_deliverable() {
                if let Err(a) = self.pv.deliver_events(&mut regs) {
                    return self.end(a);
                }
            }
            g = regs;
            if let Err(e) = self.resume(&g) {
                return VcpuEnd::Crash(e);
            }
        }
    }

    /// The guest's registers as KVM holds them now, for a vCPU stopped
    /// between two runs. In the JIT replay stub, the context the stub
    /// returns to (its page-table writes are in memory already; the replay
    /// and flushes only matter to this domain's TLBs). Refused elsewhere in
    /// the monitor's ring-0 code (the fast paths).
    pub fn guest_regs_now(&mut self) -> Result<Regs, String> {
        let k = self.regs.get_regs(&self.fd).map_err(|e| e.to_string())?;
        let s = self.regs.get_sregs(&self.fd).map_err(|e| e.to_string())?;
        if !in_guest_code(k.rip, s.cs.selector) {
            let jit = ring0::jit_va(self.pv.id);
            let in_jit = (jit..jit + crate::layout::R0_JIT_PAGES * 4096).contains(&k.rip);
            return match self.jit_guest {
                Some(g) if in_jit => Ok(g),
                _ => Err(format!("at {:#x}, in the monitor's ring-0 code", k.rip)),
            };
        }
        let mut g = Self::gregs(&k);
        g.cs = s.cs.selector;
        g.ss = s.ss.selector;
        Ok(g)
    }

    /// Act on requests the Xen core left for the monitor.
    fn after_handle(&mut self) {
        if let Some(st) = &self.starter {
            for (id, ctx) in self.pv.pending_boot.drain(..) {
                st.set_context(id, ctx);
            }
            for id in std::mem::take(&mut self.pv.vcpus_to_up) {
                st.up(id);
            }
        }
        let mask = std::mem::take(&mut self.pv.remote_flush);
        if mask != 0 {
            self.flush_remote(mask);
        }
    }

    /// Flush the TLBs of the vCPUs in `mask` before returning, as Xen's
    /// MMUEXT_TLB_FLUSH_MULTI and friends do: a target is done once it has
    /// taken the request (it reloads CR3 on its way back into the guest) or
    /// is outside KVM_RUN (it takes the request before it runs guest code
    /// again; a kick that lands before KVM_RUN makes that KVM_RUN return
    /// at once).
    fn flush_remote(&self, mask: u64) {
        let targets: Vec<&Arc<VcpuSignal>> = self
            .host
            .vcpus
            .iter()
            .enumerate()
            .filter(|&(i, _)| i as u32 != self.pv.id && i < 64 && mask & (1 << i) != 0)
            .map(|(_, s)| s)
            .collect();
        for (i, s) in self.host.vcpus.iter().enumerate() {
            if targets.iter().any(|t| Arc::ptr_eq(t, s)) {
                s.flush.store(true, Ordering::SeqCst);
                self.host.kick(i as u32);
            }
        }
        let start = std::time::Instant::now();
        while targets
            .iter()
            .any(|s| s.flush.load(Ordering::SeqCst) && s.in_guest.load(Ordering::SeqCst))
        {
            if self.host.stop.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(1) {
                self.pv.dom.log_once("remote TLB flush timeout", 0, || {
                    "remote TLB flush: a vCPU did not answer within 1 s".into()
                });
                return;
            }
            std::thread::yield_now();
        }
    }

    fn end(&self, a: Action) -> VcpuEnd {
        match a {
            Action::Shutdown(r) => VcpuEnd::Shutdown(r),
            Action::Crash(m) => VcpuEnd::Crash(m),
            Action::Down => VcpuEnd::Down,
            _ => VcpuEnd::Stopped,
        }
    }

    /// KVM_RUN was interrupted: deliver timers/events if the guest is in a
    /// state where Xen would (not in the middle of our ring-0 stub).
    fn async_event(&mut self) -> Result<(), String> {
        self.timers();
        let flush = self.signal.flush.load(Ordering::SeqCst);
        if !(self.events_deliverable() || flush) || self.upcall_irq {
            self.fd.get_kvm_run().request_interrupt_window = 0;
            return Ok(());
        }
        if !flush && self.deliver_at_boundary()? {
            return Ok(());
        }
        // Interrupt the guest at an instruction boundary with the upcall
        // vector rather than rewriting its registers here: KVM may be in the
        // middle of delivering an exception. The upcall is then built from
        // the clean frame the CPU leaves (PORT_UPCALL).
        //
        // Without an in-kernel irqchip KVM injects whatever KVM_INTERRUPT
        // queues at the next entry, whatever the guest's IF: on a hardware
        // host a vCPU stopped inside our ring-0 code (SYSCALL entry, IF=0,
        // possibly still on the guest's stack) would take the interrupt
        // there. Inject only when KVM says the vCPU can take one, else ask
        // for an exit when it can (KVM_EXIT_IRQ_WINDOW_OPEN).
        let run = self.fd.get_kvm_run();
        if run.ready_for_interrupt_injection == 0 {
            run.request_interrupt_window = 1;
            return Ok(());
        }
        run.request_interrupt_window = 0;
        let irq: u32 = UPCALL_VECTOR.into();
        // SAFETY: KVM_INTERRUPT on our own vCPU fd with a valid pointer.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), KVM_INTERRUPT, &irq) };
        let err = std::io::Error::last_os_error();
        if r == 0 || err.raw_os_error() == Some(libc::EEXIST) {
            self.upcall_irq = true;
        } else {
            let e = err.raw_os_error().unwrap_or(0);
            self.pv.dom.log_once("KVM_INTERRUPT failed", e as u64, || {
                format!("KVM_INTERRUPT failed: {err}")
            });
        }
        Ok(())
    }

    /// The kick found the vCPU stopped in guest code (not in our ring-0
    /// area, nothing half-delivered): build the upcall on its registers
    /// here, as at a hypercall exit, and save the upcall interrupt's exit.
    /// False when the interrupt path must be used.
    fn deliver_at_boundary(&mut self) -> Result<bool, String> {
        if self.pending_tail.is_some() {
            return Ok(false);
        }
        let ev = self.regs.get_events(&self.fd).map_err(|e| e.to_string())?;
        if ev.exception.injected != 0
            || ev.exception.pending != 0
            || ev.interrupt.injected != 0
            || ev.nmi.injected != 0
            || ev.nmi.pending != 0
            || ev.interrupt.shadow != 0
        {
            return Ok(false);
        }
        let (k, s) = self.read_state()?;
        if !in_guest_code(k.rip, s.cs.selector) {
            return Ok(false);
        }
        let mut g = Self::gregs(&k);
        g.cs = s.cs.selector;
        g.ss = s.ss.selector;
        if let Err(a) = self.pv.deliver_events(&mut g) {
            return Err(format!("event delivery failed: {a:?}"));
        }
        self.resume(&g)?;
        Ok(true)
    }

    /// A register dump for crash reports.
    pub fn dump(&self) -> String {
        let (r, s) = self.regs.peek(&self.fd);
        format!(
            "vCPU {} ({} mode): rip {:#018x} rsp {:#018x} rflags {:#x} cs {:#x} ss {:#x}\n  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x}\n  rsi {:#x} rdi {:#x} rbp {:#x} r8 {:#x}\n  r9 {:#x} r10 {:#x} r11 {:#x} r12 {:#x}\n  r13 {:#x} r14 {:#x} r15 {:#x}\n  cr2 {:#x} cr3 {:#x} fs.base {:#x} gs.base {:#x} exits {}",
            self.pv.id,
            if self.pv.kernel_mode { "kernel" } else { "user" },
            r.rip, r.rsp, r.rflags, s.cs.selector, s.ss.selector, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
            r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, s.cr2, s.cr3, s.fs.base, s.gs.base, self.exits
        )
    }
}

/// Guest code: a guest selector (RPL 3) and an address outside the slots
/// Xen reserves for itself (256-271), where our ring-0 area lives.
fn in_guest_code(rip: u64, cs: u16) -> bool {
    const RESERVED: std::ops::Range<u64> = 0xffff_8000_0000_0000..0xffff_8800_0000_0000;
    cs & 3 == 3 && !RESERVED.contains(&rip)
}

#[cfg(test)]
mod boundary_tests {
    use super::in_guest_code;

    #[test]
    fn kicks_inside_the_monitor_area_are_not_delivered_there() {
        assert!(in_guest_code(0xffff_ffff_8100_0000, 0xe033));
        assert!(in_guest_code(0x40_1000, 0x33));
        // the ring-0 area (slot 257) and any reserved slot, any selector
        assert!(!in_guest_code(0xffff_8080_0000_1000, 0xe033));
        assert!(!in_guest_code(0xffff_8000_0000_0000, 0x33));
        assert!(!in_guest_code(0xffff_87ff_ffff_ffff, 0x33));
        // a ring-0 selector
        assert!(!in_guest_code(0x40_1000, 0xe008));
    }
}
