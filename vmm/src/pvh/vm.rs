//! A PVH domain on KVM with Xen support: memory, the in-kernel irqchip,
//! KVM's Xen configuration, the boot vCPU, and the same Xen core, xenstore
//! and PV backends as a PV domain.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use xen_shim::cpuid::{CpuidEntry, CpuidPolicy};
use xen_shim::domain::{Domain, DomainLayout, Platform};
use xen_shim::mmu::Mmu;
use xen_shim::time::{Clock, TimeScale};
use xen_shim::vcpu::PvVcpu;

use super::boot::{self, PvhLayout, GRANT_FRAMES, PAGE};
use super::hypercall::HvmState;
use super::{kvm_xen, PvhError};
use crate::memory::{Memory, MIN_GUEST_MIB};
use crate::platform::Host;
use crate::vm::{Outcome, VmConfig};
use crate::xs::{XsBackend, XsDomain};

pub const STORE_PORT: u32 = 1;
pub const CONSOLE_PORT: u32 = 2;
/// KVM memory slots: RAM, the special pages, then one per grant frame.
pub const SLOT_RAM: u32 = 0;
pub const SLOT_SPECIAL: u32 = 1;
pub const SLOT_GRANT0: u32 = 2;
/// Where KVM's VMX needs its TSS (three pages below the 4 GiB boundary's
/// BIOS area; unused by the guest, outside its RAM).
const TSS_ADDR: usize = 0xfffb_d000;

pub struct PvhVm {
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    _mem: Arc<Memory>,
    pub dom: Arc<Domain>,
    pub host: Arc<Host>,
    pub vcpu: super::vcpu::PvhVcpu,
    pub print_stats: bool,
    _devices: crate::hotplug::DeviceOwner,
}

fn kerr(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> PvhError {
    move |e| PvhError::Kvm(format!("{what}: {e}"))
}

impl PvhVm {
    pub fn create(cfg: &VmConfig) -> Result<PvhVm, PvhError> {
        if cfg.vcpus != 1 {
            return Err(PvhError::Vcpus(cfg.vcpus));
        }
        let ram = cfg.memory_mib << 20;
        if cfg.memory_mib < MIN_GUEST_MIB || ram > boot::MAX_RAM {
            return Err(PvhError::Memory(cfg.memory_mib));
        }
        if cfg.maxmem_mib > cfg.memory_mib {
            log::warn!(
                "PVH: maxmem above memory is not offered yet; the guest has {} MiB",
                cfg.memory_mib
            );
        }
        super::check_host(None)?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| PvhError::Read(p.display().to_string(), e))
        };
        let vmlinux = crate::loader::vmlinux(&read(cfg.kernel)?).map_err(boot::BootError::from)?;
        let initrd = match cfg.initrd {
            Some(p) => read(p)?,
            None => Vec::new(),
        };
        let kvm = Kvm::new().map_err(PvhError::NoKvm)?;
        let vm = kvm.create_vm().map_err(kerr("KVM_CREATE_VM"))?;
        let layout = PvhLayout::new(ram);
        let mem = Arc::new(Memory::new(layout.end).map_err(|e| PvhError::Kvm(e.to_string()))?);
        let base = mem.host_base() as u64;
        let (sp, sp_len) = layout.special();
        for (slot, gpa, size) in [(SLOT_RAM, 0, ram), (SLOT_SPECIAL, sp, sp_len)] {
            // SAFETY: the mapping outlives the VM (PvhVm holds both).
            unsafe {
                vm.set_user_memory_region(kvm_userspace_memory_region {
                    slot,
                    flags: 0,
                    guest_phys_addr: gpa,
                    memory_size: size,
                    userspace_addr: base + gpa,
                })
                .map_err(kerr("KVM_SET_USER_MEMORY_REGION"))?;
            }
        }
        vm.set_tss_address(TSS_ADDR)
            .map_err(kerr("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip().map_err(kerr("KVM_CREATE_IRQCHIP"))?;
        vm.create_pit2(kvm_pit_config::default())
            .map_err(kerr("KVM_CREATE_PIT2"))?;
        kvm_xen::hvm_config(&vm)?;
        kvm_xen::set_long_mode(&vm, true)?;
        let entry = boot::load(&mem.mmap, &layout, &vmlinux, &initrd, cfg.cmdline)?;
        drop(vmlinux);
        let fd = vm.create_vcpu(0).map_err(kerr("KVM_CREATE_VCPU"))?;
        kvm_xen::set_vcpu_id(&fd, 0)?;
        let tsc_khz = fd.get_tsc_khz().map_err(kerr("KVM_GET_TSC_KHZ"))?;
        let host_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kerr("KVM_GET_SUPPORTED_CPUID"))?;
        let table = super::cpuid::pvh_cpuid(host_cpuid.as_slice(), 0, cfg.domid, tsc_khz);
        let cpuid =
            CpuId::from_entries(&table).map_err(|e| PvhError::Kvm(format!("cpuid: {e:?}")))?;
        fd.set_cpuid2(&cpuid).map_err(kerr("KVM_SET_CPUID2"))?;
        set_entry_state(&fd, &entry)?;
        let host = Arc::new(Host::new(1));
        let dom = Arc::new(domain(cfg, &layout, &mem, &host, &table, tsc_khz));
        let _ = host.domain.set(Arc::downgrade(&dom));
        dom.init_shared_info();
        let mut xs = XsBackend::new(&XsDomain {
            domid: u32::from(cfg.domid),
            name: cfg.name,
            mem_kib: ram >> 10,
            max_mem_kib: ram >> 10,
            vcpus: 1,
            store_gfn: layout.store_gpa / PAGE,
            store_port: STORE_PORT,
            console_gfn: layout.console_gpa / PAGE,
            console_port: CONSOLE_PORT,
        })
        .map_err(|e| PvhError::Kvm(e.to_string()))?;
        if let Some(p) = cfg.xenstore_socket {
            xs.serve_socket(p)
                .map_err(|e| PvhError::Kvm(e.to_string()))?;
        }
        let xs = Arc::new(xs);
        xs.spawn_pump(Arc::downgrade(&dom));
        let ctx = devices::xenbus::BackendCtx {
            dom: dom.clone(),
            store: xs.store.clone(),
            backends: host.backends.clone(),
        };
        let _ = host.xs.set(xs);
        let devices =
            crate::hotplug::boot_devices(ctx, cfg).map_err(|e| PvhError::Kvm(e.to_string()))?;
        let _ = host.devices.set(devices.0.clone());
        let vm = Arc::new(vm);
        let pv = PvVcpu::new(0, dom.clone());
        let signal = host.vcpus[0].clone();
        let vcpu = super::vcpu::PvhVcpu::new(
            fd,
            pv,
            vm.clone(),
            base,
            HvmState::new(layout, cfg.domid),
            host.clone(),
            signal,
        );
        Ok(PvhVm {
            _kvm: kvm,
            _vm: vm,
            _mem: mem,
            dom,
            host,
            vcpu,
            print_stats: false,
            _devices: devices,
        })
    }

    /// Run the guest until it shuts down.
    pub fn run(self) -> Outcome {
        self.run_keeping_devices().0
    }

    /// [`Self::run`], handing back the PV device backends still running
    /// (as [`crate::vm::Vm::run_keeping_devices`]).
    pub fn run_keeping_devices(self) -> (Outcome, crate::hotplug::DeviceOwner) {
        crate::vcpu::install_kick_handler();
        if let Err(e) = crate::seccomp::install() {
            let o = Outcome::Crash(format!(
                "{e} (--no-seccomp or XENKVM_SECCOMP=0 runs without it)"
            ));
            return (o, self._devices);
        }
        let PvhVm {
            vcpu,
            dom,
            host,
            _devices,
            ..
        } = self;
        (run_vcpu(vcpu, &dom, &host), _devices)
    }
}

/// Run the vCPU on its own thread until the guest shuts down.
fn run_vcpu(mut vcpu: super::vcpu::PvhVcpu, dom: &Domain, host: &Host) -> Outcome {
    let t = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || {
            let end = vcpu.run();
            let dump = vcpu.dump();
            (end, std::mem::take(&mut vcpu.exits), dump)
        });
    let (end, exits, dump) = match t.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        _ => return Outcome::Crash("the vCPU thread failed".into()),
    };
    host.stop_all();
    let calls = dom
        .hypercall_counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    log::info!("PVH exits: {exits:?}");
    log::info!("hypercalls by name: {calls:?}");
    use crate::vcpu::VcpuEnd;
    match end {
        VcpuEnd::Shutdown(0) => Outcome::Poweroff,
        VcpuEnd::Shutdown(1) => Outcome::Reboot,
        VcpuEnd::Shutdown(3) => Outcome::Crash(format!(
            "the guest crashed (SCHEDOP_shutdown crash)\n{dump}"
        )),
        VcpuEnd::Shutdown(n) => Outcome::Other(n),
        VcpuEnd::Crash(m) => Outcome::Crash(format!("vCPU 0: {m}\n{dump}")),
        VcpuEnd::Stopped | VcpuEnd::Down => Outcome::Other(255),
    }
}

fn set_entry_state(fd: &VcpuFd, e: &boot::Entry) -> Result<(), PvhError> {
    let mut sregs = fd.get_sregs().map_err(kerr("KVM_GET_SREGS"))?;
    let regs = boot::entry_state(&mut sregs, e);
    fd.set_sregs(&sregs).map_err(kerr("KVM_SET_SREGS"))?;
    fd.set_regs(&regs).map_err(kerr("KVM_SET_REGS"))?;
    let mut fpu = fd.get_fpu().map_err(kerr("KVM_GET_FPU"))?;
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    fd.set_fpu(&fpu).map_err(kerr("KVM_SET_FPU"))?;
    Ok(())
}

/// The Xen core's domain: RAM frames identity-mapped (gfn = guest frame),
/// shared_info in a scratch page until the guest places it.
fn domain(
    cfg: &VmConfig,
    layout: &PvhLayout,
    mem: &Arc<Memory>,
    host: &Arc<Host>,
    table: &[kvm_bindings::kvm_cpuid_entry2],
    tsc_khz: u32,
) -> Domain {
    let nr_pages = layout.ram / PAGE;
    let entries: Vec<CpuidEntry> = table
        .iter()
        .map(|e| CpuidEntry {
            leaf: e.function,
            sub: e.index,
            indexed: e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect();
    // SAFETY: rdtsc has no preconditions.
    let tsc0 = unsafe { core::arch::x86_64::_rdtsc() };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let clock = Clock {
        tsc0,
        scale: TimeScale::from_hz(u64::from(tsc_khz) * 1000),
        tsc_khz: tsc_khz.into(),
        wallclock_ns: wall,
    };
    let dlayout = DomainLayout {
        domid: cfg.domid,
        nr_pages,
        max_vcpus: 1,
        shared_info_gpa: layout.scratch_shared_info,
        m2p_gpa: 0,
        m2p_entries: 0,
        m2p_va: 0,
        console_mfn: layout.console_gpa / PAGE,
        console_port: CONSOLE_PORT,
        store_mfn: layout.store_gpa / PAGE,
        store_port: STORE_PORT,
        grant_gpa: layout.grant_gpa,
        grant_frames: GRANT_FRAMES,
    };
    let platform: Arc<dyn Platform> = host.clone();
    Domain::new(
        mem.clone(),
        dlayout,
        Mmu::new(nr_pages),
        CpuidPolicy { entries },
        clock,
        platform,
    )
}
