//! A PVH domain on KVM with Xen support: memory, the in-kernel irqchip,
//! KVM's Xen configuration, the boot vCPU, and the same Xen core, xenstore
//! and PV backends as a PV domain.

use std::collections::BTreeMap;
use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use xen_shim::cpuid::CpuidPolicy;
use xen_shim::domain::{Domain, DomainLayout, Platform};
use xen_shim::mmu::Mmu;
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
    pub vcpus: Vec<super::vcpu::PvhVcpu>,
    pub print_stats: bool,
    _devices: crate::hotplug::DeviceOwner,
}

fn kerr(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> PvhError {
    move |e| PvhError::Kvm(format!("{what}: {e}"))
}

impl PvhVm {
    pub fn create(cfg: &VmConfig) -> Result<PvhVm, PvhError> {
        if cfg.vcpus == 0 || cfg.vcpus > super::acpi::MAX_CPUS {
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
        let entry = boot::load(
            &mem.mmap,
            &layout,
            cfg.vcpus,
            &vmlinux,
            &initrd,
            cfg.cmdline,
        )?;
        drop(vmlinux);
        let host_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kerr("KVM_GET_SUPPORTED_CPUID"))?;
        // vCPU 0 starts at the PVH entry; the others wait in KVM for the
        // INIT and start-up IPIs of Linux's CPU bring-up.
        let mut fds = Vec::new();
        let mut table = Vec::new();
        let mut tsc_khz = 0;
        for i in 0..cfg.vcpus {
            let fd = vm
                .create_vcpu(u64::from(i))
                .map_err(kerr("KVM_CREATE_VCPU"))?;
            kvm_xen::set_vcpu_id(&fd, i)?;
            if i == 0 {
                tsc_khz = fd.get_tsc_khz().map_err(kerr("KVM_GET_TSC_KHZ"))?;
            }
            table = super::cpuid::pvh_cpuid(host_cpuid.as_slice(), i, cfg.domid, tsc_khz);
            let cpuid =
                CpuId::from_entries(&table).map_err(|e| PvhError::Kvm(format!("cpuid: {e:?}")))?;
            fd.set_cpuid2(&cpuid).map_err(kerr("KVM_SET_CPUID2"))?;
            if i == 0 {
                set_entry_state(&fd, &entry)?;
            }
            fds.push(fd);
        }
        let host = Arc::new(Host::new(cfg.vcpus));
        let dom = Arc::new(domain(cfg, &layout, &mem, &host, &table, tsc_khz));
        let _ = host.domain.set(Arc::downgrade(&dom));
        // HVM vCPUs are all up as far as Xen is concerned (Linux starts
        // them with IPIs, not VCPUOP_up).
        let all = u64::MAX >> (64 - cfg.vcpus);
        dom.online.store(all, std::sync::atomic::Ordering::SeqCst);
        dom.initialised
            .store(all, std::sync::atomic::Ordering::SeqCst);
        dom.init_shared_info();
        let mut xs = XsBackend::new(&XsDomain {
            domid: u32::from(cfg.domid),
            name: cfg.name,
            mem_kib: ram >> 10,
            max_mem_kib: ram >> 10,
            vcpus: cfg.vcpus,
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
            // PVH RAM is not a memfd: vhost-user disks are refused.
            shared_ram: None,
        };
        let _ = host.xs.set(xs);
        let devices =
            crate::hotplug::boot_devices(ctx, cfg).map_err(|e| PvhError::Kvm(e.to_string()))?;
        let _ = host.devices.set(devices.0.clone());
        let vm = Arc::new(vm);
        let shared = Arc::new(super::vcpu::Shared {
            vm: vm.clone(),
            host_base: base,
            pending: (0..cfg.vcpus).map(|_| Default::default()).collect(),
            hvm: std::sync::Mutex::new(HvmState::new(layout, cfg.domid)),
            host: host.clone(),
        });
        let vcpus = fds
            .into_iter()
            .zip(0u32..)
            .map(|(fd, i)| {
                super::vcpu::PvhVcpu::new(
                    fd,
                    PvVcpu::new(i, dom.clone()),
                    shared.clone(),
                    host.clone(),
                    host.vcpus[i as usize].clone(),
                )
            })
            .collect();
        Ok(PvhVm {
            _kvm: kvm,
            _vm: vm,
            _mem: mem,
            dom,
            host,
            vcpus,
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
            vcpus,
            dom,
            host,
            _devices,
            ..
        } = self;
        (run_vcpus(vcpus, &dom, &host, self.print_stats), _devices)
    }
}

/// Run each vCPU on its own thread until the guest shuts down (the first
/// vCPU to end the domain decides how), then stop the others.
fn run_vcpus(
    vcpus: Vec<super::vcpu::PvhVcpu>,
    dom: &Domain,
    host: &Host,
    print_stats: bool,
) -> Outcome {
    use crate::vcpu::VcpuEnd;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (i, mut vcpu) in vcpus.into_iter().enumerate() {
        let tx = tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || {
                let end = vcpu.run();
                let dump = vcpu.dump();
                let _ = tx.send((i, end, std::mem::take(&mut vcpu.exits), dump));
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                host.stop_all();
                return Outcome::Crash(format!("cannot start vCPU {i}: {e}"));
            }
        }
    }
    drop(tx);
    let mut outcome = None;
    let mut exits: BTreeMap<&'static str, u64> = BTreeMap::new();
    while let Ok((i, end, e, dump)) = rx.recv() {
        for (k, v) in e {
            *exits.entry(k).or_insert(0) += v;
        }
        if outcome.is_none() {
            outcome = match end {
                VcpuEnd::Shutdown(0) => Some(Outcome::Poweroff),
                VcpuEnd::Shutdown(1) => Some(Outcome::Reboot),
                VcpuEnd::Shutdown(3) => Some(Outcome::Crash(format!(
                    "the guest crashed (SCHEDOP_shutdown crash)\n{dump}"
                ))),
                VcpuEnd::Shutdown(n) => Some(Outcome::Other(n)),
                VcpuEnd::Crash(m) => Some(Outcome::Crash(format!("vCPU {i}: {m}\n{dump}"))),
                VcpuEnd::Stopped | VcpuEnd::Down => None,
            };
        }
        host.stop_all();
    }
    for t in threads {
        let _ = t.join();
    }
    let calls = dom
        .hypercall_counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    log::info!("PVH exits: {exits:?}");
    log::info!("hypercalls by name: {calls:?}");
    if print_stats {
        // As the PV monitor prints them (scripts/bench reads these lines).
        for (k, v) in &exits {
            eprintln!("xenkvm-stats exit {} {v}", k.replace(' ', "_"));
        }
        for (k, v) in &calls {
            eprintln!("xenkvm-stats hypercall {k} {v}");
        }
        eprintln!("xenkvm-stats exits_total {}", exits.values().sum::<u64>());
    }
    outcome.unwrap_or(Outcome::Other(255))
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
    let entries = crate::vm::cpuid_entries(table);
    let clock = crate::vm::clock_now(tsc_khz);
    let dlayout = DomainLayout {
        domid: cfg.domid,
        nr_pages,
        max_vcpus: cfg.vcpus,
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
