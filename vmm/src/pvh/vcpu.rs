//! The PVH vCPU thread: KVM_RUN with KVM's Xen support, the hypercalls KVM
//! hands over (KVM_EXIT_XEN) answered in place, kicks as immediate exits.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_EXIT_XEN, KVM_EXIT_XEN_HCALL};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use xen_shim::domain::Platform;
use xen_shim::vcpu::{Action, PvVcpu};

use super::hypercall::{hvm_hypercall, HvmState, KvmSide};
use super::kvm_xen;
use super::vm::SLOT_GRANT0;
use crate::platform::{Host, VcpuSignal};
use crate::vcpu::VcpuEnd;

/// Port 0xe9: Xen's HVM debug console (`earlyprintk=xen` on an HVM guest).
const DEBUG_PORT: u16 = 0xe9;

pub struct PvhVcpu {
    fd: VcpuFd,
    id: u32,
    pv: PvVcpu,
    shared: Arc<Shared>,
    host: Arc<Host>,
    signal: Arc<VcpuSignal>,
    pub exits: BTreeMap<&'static str, u64>,
}

/// KVM attributes a hypercall changed for a vCPU: its own thread applies
/// them before its next KVM_RUN (a vCPU ioctl is the vCPU's to make).
#[derive(Default)]
pub struct Pending {
    vcpu_info: Option<u64>,
    timer_port: Option<u32>,
}

/// What the vCPUs of a domain share: the VM, where guest memory is in
/// ours, the attributes pending per vCPU, and the HVM state.
pub struct Shared {
    pub vm: Arc<VmFd>,
    pub host_base: u64,
    pub pending: Vec<Mutex<Pending>>,
    pub hvm: Mutex<HvmState>,
    pub host: Arc<Host>,
}

/// KVM's side of the hypercalls of vCPU `me`.
struct Side<'a> {
    shared: &'a Shared,
    me: u32,
}

impl Side<'_> {
    /// Leave `f`'s change for vCPU `vcpu`, and make it take it soon.
    fn pend(&mut self, vcpu: u32, f: impl FnOnce(&mut Pending)) -> Result<(), String> {
        let slot = self
            .shared
            .pending
            .get(vcpu as usize)
            .ok_or_else(|| format!("vCPU {vcpu} does not exist"))?;
        f(&mut slot.lock().unwrap_or_else(|e| e.into_inner()));
        if vcpu != self.me {
            self.shared.host.kick(vcpu);
        }
        Ok(())
    }
}

impl KvmSide for Side<'_> {
    fn set_shared_info(&mut self, gfn: u64) -> Result<(), String> {
        kvm_xen::set_shared_info(&*self.shared.vm, gfn).map_err(|e| e.to_string())
    }

    fn set_vcpu_info(&mut self, vcpu: u32, gpa: u64) -> Result<(), String> {
        self.pend(vcpu, |p| p.vcpu_info = Some(gpa))
    }

    fn set_upcall_vector(&mut self, vector: u8, long_mode: bool) -> Result<(), String> {
        let vm = &*self.shared.vm;
        kvm_xen::set_long_mode(vm, long_mode).map_err(|e| e.to_string())?;
        kvm_xen::set_upcall_vector(vm, vector).map_err(|e| e.to_string())
    }

    fn set_timer_port(&mut self, vcpu: u32, port: u32) -> Result<(), String> {
        self.pend(vcpu, |p| p.timer_port = Some(port))
    }

    fn kick(&mut self, vcpu: u32) {
        self.shared.host.kick(vcpu);
    }

    fn map_grant_frame(
        &mut self,
        idx: u32,
        old: Option<u64>,
        gfn: u64,
        host_gpa: u64,
    ) -> Result<(), String> {
        let slot = SLOT_GRANT0 + idx;
        let userspace_addr = self.shared.host_base + host_gpa;
        let region = |gpa: u64, size: u64| kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr,
        };
        let vm = &self.shared.vm;
        if let Some(o) = old {
            // SAFETY: deleting our own slot (size 0).
            unsafe { vm.set_user_memory_region(region(o * 4096, 0)) }
                .map_err(|e| format!("grant frame {idx}: {e}"))?;
        }
        // SAFETY: the page is in the monitor's mapping, which outlives the VM.
        unsafe { vm.set_user_memory_region(region(gfn * 4096, 4096)) }
            .map_err(|e| format!("grant frame {idx} at {gfn:#x}: {e}"))
    }
}

impl PvhVcpu {
    pub fn new(
        fd: VcpuFd,
        pv: PvVcpu,
        shared: Arc<Shared>,
        host: Arc<Host>,
        signal: Arc<VcpuSignal>,
    ) -> PvhVcpu {
        PvhVcpu {
            fd,
            id: pv.id,
            pv,
            shared,
            host,
            signal,
            exits: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.exits.entry(what).or_insert(0) += 1;
    }

    /// Run until the guest shuts down, crashes or the monitor stops.
    pub fn run(&mut self) -> VcpuEnd {
        // SAFETY: pthread_self and gettid have no preconditions.
        *self.signal.thread.lock().unwrap_or_else(|e| e.into_inner()) =
            unsafe { libc::pthread_self() } as u64;
        self.signal
            .tid
            .store(unsafe { libc::gettid() } as u32, Ordering::SeqCst);
        let ie = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        crate::vcpu::set_kick_target(ie);
        let end = self.run_inner();
        crate::vcpu::set_kick_target(std::ptr::null_mut());
        self.signal.tid.store(0, Ordering::SeqCst);
        *self.signal.thread.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        end
    }

    /// Apply the attributes the hypercalls changed for this vCPU.
    fn apply_attrs(&mut self) -> Result<(), String> {
        let (info, port) = {
            let Some(slot) = self.shared.pending.get(self.id as usize) else {
                return Ok(());
            };
            let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
            (p.vcpu_info.take(), p.timer_port.take())
        };
        if let Some(gpa) = info {
            kvm_xen::set_vcpu_info(&self.fd, gpa).map_err(|e| e.to_string())?;
        }
        if let Some(port) = port {
            kvm_xen::set_timer_port(&self.fd, port).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn run_inner(&mut self) -> VcpuEnd {
        loop {
            if self.host.stop.load(Ordering::SeqCst) {
                return VcpuEnd::Stopped;
            }
            if self.host.control.is_paused() {
                self.host.control.wait_unpaused(&self.host.stop);
                continue;
            }
            if let Err(e) = self.apply_attrs() {
                return VcpuEnd::Crash(e);
            }
            self.signal.in_guest.store(true, Ordering::SeqCst);
            let exit = match self.fd.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    if port == DEBUG_PORT {
                        self.host.output(data);
                    } else if let Some(r) = super::acpi::port_write(port, data) {
                        return VcpuEnd::Shutdown(r);
                    }
                    Ok("io out")
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    let fill = if super::acpi::is_acpi_port(port) {
                        0
                    } else {
                        0xff
                    };
                    data.iter_mut().for_each(|b| *b = fill);
                    Ok("io in")
                }
                Ok(VcpuExit::MmioRead(_, data)) => {
                    data.iter_mut().for_each(|b| *b = 0xff);
                    Ok("mmio read")
                }
                Ok(VcpuExit::MmioWrite(..)) => Ok("mmio write"),
                Ok(VcpuExit::Unsupported(r)) if r == KVM_EXIT_XEN => Ok("xen"),
                Ok(VcpuExit::Hlt) => Ok("hlt"),
                Ok(VcpuExit::Shutdown) => {
                    Err("the guest triple-faulted (KVM_EXIT_SHUTDOWN)".to_string())
                }
                Ok(other) => Err(format!("unexpected KVM exit: {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok("kick"),
                Err(e) => Err(format!("KVM_RUN failed: {e}")),
            };
            self.signal.in_guest.store(false, Ordering::SeqCst);
            self.pv.note_exit();
            let what = match exit {
                Ok(w) => w,
                Err(e) => return VcpuEnd::Crash(e),
            };
            self.count(what);
            match what {
                "kick" => {
                    self.fd.set_kvm_immediate_exit(0);
                    self.signal.kicked.store(false, Ordering::SeqCst);
                }
                "xen" => match self.xen_exit() {
                    Ok(Action::Resume) => {}
                    Ok(Action::Shutdown(r)) => return VcpuEnd::Shutdown(r),
                    Ok(Action::Crash(m)) => return VcpuEnd::Crash(m),
                    Ok(_) => {}
                    Err(e) => return VcpuEnd::Crash(e),
                },
                _ => {}
            }
        }
    }

    /// KVM_EXIT_XEN: a hypercall; the result goes back in `kvm_run`.
    fn xen_exit(&mut self) -> Result<Action, String> {
        let run = self.fd.get_kvm_run();
        // SAFETY: exit reason KVM_EXIT_XEN: the `xen` member is the live one.
        let xen = unsafe { run.__bindgen_anon_1.xen };
        if xen.type_ != KVM_EXIT_XEN_HCALL {
            return Err(format!("unknown KVM_EXIT_XEN type {}", xen.type_));
        }
        // SAFETY: type HCALL: the `hcall` member is the live one.
        let h = unsafe { xen.u.hcall };
        let (ret, action) = if h.cpl != 0 {
            (-xen_shim::abi::errno::EPERM, Action::Resume)
        } else {
            let sregs = self
                .fd
                .get_sregs()
                .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
            self.pv.root_kernel = (sregs.cr3 & 0x000f_ffff_ffff_f000) >> 12;
            let shared = self.shared.clone();
            let mut hvm = shared.hvm.lock().unwrap_or_else(|e| e.into_inner());
            let mut side = Side {
                shared: &shared,
                me: self.id,
            };
            hvm_hypercall(
                &mut self.pv,
                &mut hvm,
                &mut side,
                h.input,
                h.params,
                h.longmode != 0,
            )
        };
        let run = self.fd.get_kvm_run();
        // Writing a field of the live `xen.u.hcall` member.
        run.__bindgen_anon_1.xen.u.hcall.result = ret as u64;
        Ok(action)
    }

    /// The registers, for a crash report.
    pub fn dump(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => {
                format!(
                "rip {:#x} rsp {:#x} rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} \
                 rflags {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x}",
                r.rip, r.rsp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rflags, s.cr0, s.cr3,
                s.cr4, s.efer, s.cs.selector
            )
            }
            _ => "(registers unavailable)".into(),
        }
    }
}
