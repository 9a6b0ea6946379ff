//! A PV domain on KVM: memory, the monitor area, vCPUs and their threads.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvm_bindings::{
    kvm_msr_entry, kvm_userspace_memory_region, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use xen_shim::cpuid::{CpuidEntry, CpuidPolicy};
use xen_shim::domain::{Domain, DomainLayout, Platform};
use xen_shim::mmu::Mmu;
use xen_shim::regs::Regs;
use xen_shim::time::{Clock, TimeScale};
use xen_shim::vcpu::PvVcpu;

use crate::builder::{self, BuildInput, PvLayout};
use crate::layout::*;
use crate::memory::{Memory, MIN_GUEST_MIB};
use crate::platform::{Host, VcpuSignal};
use crate::ring0;
use crate::ring0_fast;
use std::collections::BTreeMap;

use crate::smp::{Starter, VcpuReport};
use crate::vcpu::{install_kick_handler, Vcpu, VcpuEnd};
use crate::xs::{XsBackend, XsDomain};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you allowed to use it?)")]
    NoKvm(kvm_ioctls::Error),
    #[error("KVM: {0}")]
    Kvm(String),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error(transparent)]
    Build(#[from] builder::BuildError),
    #[error("guest memory: {0}")]
    Mem(#[from] xen_shim::mem::MemError),
    #[error("the saved guest's xenstore/console ring frames {0:#x}/{1:#x} are not two frames of its memory")]
    RestoreRings(u64, u64),
    #[error("loading the kernel: {0}")]
    Loader(#[from] crate::loader::LoaderError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} MiB is too little memory for a PV guest (at least {MIN_GUEST_MIB} MiB)")]
    TooLittleMemory(u64),
    #[error("{0} MiB of memory is more than this host's memory ({1} MiB)")]
    TooMuchMemory(u64, u64),
    #[error("{0} vCPUs: xenkvm runs 1 to {MAX_VCPUS} vCPUs per domain")]
    Vcpus(u32),
    #[error(transparent)]
    Xenstore(#[from] crate::xs::XsError),
    #[error(transparent)]
    Devices(#[from] crate::pvdev::PvDevError),
    #[error(transparent)]
    Hotplug(#[from] crate::hotplug::HotplugError),
}

fn kerr(what: &str) -> impl Fn(kvm_ioctls::Error) -> VmError + '_ {
    move |e| VmError::Kvm(format!("{what}: {e}"))
}

pub struct VmConfig<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub memory_mib: u64,
    /// The RAM region, MiB (xl's `maxmem`, at least `memory_mib`): the
    /// frames above `memory_mib` start unpopulated, for the balloon.
    pub maxmem_mib: u64,
    pub vcpus: u32,
    pub name: &'a str,
    /// Serve the domain's xenstore on this unix socket.
    pub xenstore_socket: Option<&'a Path>,
    /// PV disks (opened once, served again after each reboot).
    pub disks: &'a [crate::pvdev::OpenDisk],
    /// PV nics.
    pub vifs: &'a [api::xlcfg::VifSpec],
    /// The domain id (1..0x7ff0).
    pub domid: u16,
    /// A restore's (xenstore, console) ring frames, where the saved guest
    /// has them (migrate::scan), instead of the builder's.
    pub restore_rings: Option<(u64, u64)>,
}

/// How the domain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Poweroff,
    Reboot,
    Crash(String),
    Other(u32),
}

pub struct Vm {
    pub(crate) kvm: Kvm,
    _vm: Arc<VmFd>,
    pub dom: Arc<Domain>,
    pub host: Arc<Host>,
    pub layout: PvLayout,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) boot_regs: Regs,
    /// Print machine-readable exit and hypercall counts at the end.
    pub print_stats: bool,
    /// The PV device backends; stopped when the VM ends (or, with
    /// [`Vm::run_keeping_devices`], when the caller drops them).
    _devices: crate::hotplug::DeviceOwner,
}

const STORE_PORT: u32 = 1;
const CONSOLE_PORT: u32 = 2;

impl Vm {
    pub fn create(cfg: &VmConfig) -> Result<Vm, VmError> {
        if cfg.memory_mib < MIN_GUEST_MIB {
            return Err(VmError::TooLittleMemory(cfg.memory_mib));
        }
        let maxmem_mib = cfg.maxmem_mib.max(cfg.memory_mib);
        if let Some(host) = crate::memory::host_total_mib() {
            if maxmem_mib > host {
                return Err(VmError::TooMuchMemory(maxmem_mib, host));
            }
        }
        if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
            return Err(VmError::Vcpus(cfg.vcpus));
        }
        let kernel = crate::loader::load_pv_kernel_file(cfg.kernel)?;
        let initrd = match cfg.initrd {
            Some(p) => std::fs::read(p).map_err(|e| VmError::Read {
                path: p.display().to_string(),
                source: e,
            })?,
            None => Vec::new(),
        };
        let kvm = Kvm::new().map_err(VmError::NoKvm)?;
        let profile = crate::host_profile::get(&kvm).map_err(VmError::Kvm)?;
        let vm = Arc::new(kvm.create_vm().map_err(kerr("KVM_CREATE_VM"))?);
        let ram = maxmem_mib << 20;
        let boot_pages = (cfg.memory_mib << 20) / PAGE;
        let mon = Arc::new(MonitorLayout::new(ram));
        // A vhost-user backend maps the guest's RAM: then it is a memfd.
        let mem = Arc::new(if cfg.disks.iter().any(|d| d.is_vhost_user()) {
            Memory::new_shared(mon.end)?
        } else {
            Memory::new(mon.end)?
        });
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mon.end,
            userspace_addr: mem.host_base() as u64,
        };
        // SAFETY: the mapping outlives the VM (held in Domain via Arc).
        unsafe {
            vm.set_user_memory_region(region)
                .map_err(kerr("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let mut slots = ring0::build(&*mem, &mon, cfg.vcpus, profile.ring0_for(cfg.vcpus))?;
        if profile.kind == crate::host_profile::HostKind::Hardware {
            // The M2P also where Xen has it (slot 256): a guest saved on Xen
            // read XENMEM_machphys_mapping there at boot and keeps using that
            // address after a restore here. PVM-style hosts keep slot 256.
            slots[0] = slots[crate::layout::SLOT_M2P - 256];
        }
        let nr_pages = ram / PAGE;
        let mut mmu = Mmu::new(nr_pages);
        mmu.set_unpopulated_from(boot_pages);
        crate::balloon::clear_m2p(&*mem, &mon, boot_pages)?;
        mmu.set_reserved_l4(slots);
        mmu.add_data_frame(mon.shared_info / PAGE);
        for i in 0..u64::from(GRANT_FRAMES) {
            mmu.add_data_frame(mon.grant / PAGE + i);
        }
        let mut layout = builder::build(
            &*mem,
            &mut mmu,
            &kernel,
            &BuildInput {
                initrd: &initrd,
                cmdline: cfg.cmdline,
                nr_pages: boot_pages,
                shared_info_gpa: mon.shared_info,
                console_port: CONSOLE_PORT,
                store_port: STORE_PORT,
            },
        )?;
        if let Some((store, console)) = cfg.restore_rings {
            if store >= boot_pages || console >= boot_pages || store == console {
                return Err(VmError::RestoreRings(store, console));
            }
            layout.store_pfn = store;
            layout.console_pfn = console;
        }
        if log::log_enabled!(log::Level::Debug) {
            let w = xen_shim::guestva::walk(&*mem, layout.pt_pfn, M2P_VA + 0x1f020, false, true);
            log::debug!("M2P walk from the initial L4: {w:x?}");
        }
        // vCPUs and CPUID.
        let mut fds = Vec::new();
        for i in 0..cfg.vcpus {
            fds.push(
                vm.create_vcpu(u64::from(i))
                    .map_err(kerr("KVM_CREATE_VCPU"))?,
            );
        }
        let tsc_khz = fds[0].get_tsc_khz().map_err(kerr("KVM_GET_TSC_KHZ"))?;
        let host_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kerr("KVM_GET_SUPPORTED_CPUID"))?;
        let mut entries = cpuid_entries(host_cpuid.as_slice());
        add_brand_string(&mut entries);
        let policy = CpuidPolicy::pv_from_host(&entries, tsc_khz);
        let host = Arc::new(Host::new(cfg.vcpus));
        let _ = host.dirty_log.set(crate::migrate::dirty::DirtyLog::new(
            vm.clone(),
            region,
            mem.clone(),
        ));
        let clock = clock_now(tsc_khz);
        let dlayout = DomainLayout {
            domid: cfg.domid,
            nr_pages,
            max_vcpus: cfg.vcpus,
            shared_info_gpa: mon.shared_info,
            m2p_gpa: mon.m2p,
            m2p_entries: nr_pages,
            m2p_va: M2P_VA,
            console_mfn: layout.console_pfn,
            console_port: CONSOLE_PORT,
            store_mfn: layout.store_pfn,
            store_port: STORE_PORT,
            grant_gpa: mon.grant,
            grant_frames: GRANT_FRAMES,
        };
        let platform: Arc<dyn Platform> = host.clone();
        let dom = Arc::new(Domain::new(
            mem.clone(),
            dlayout,
            mmu,
            policy.clone(),
            clock,
            platform,
        ));
        let _ = host.domain.set(Arc::downgrade(&dom));
        dom.init_shared_info();
        let mut xs = XsBackend::new(&XsDomain {
            domid: u32::from(cfg.domid),
            name: cfg.name,
            mem_kib: boot_pages << 2,
            max_mem_kib: ram >> 10,
            vcpus: cfg.vcpus,
            store_gfn: layout.store_pfn,
            store_port: STORE_PORT,
            console_gfn: layout.console_pfn,
            console_port: CONSOLE_PORT,
        })?;
        if let Some(p) = cfg.xenstore_socket {
            xs.serve_socket(p)?;
        }
        let xs = Arc::new(xs);
        xs.spawn_pump(Arc::downgrade(&dom));
        let ctx = devices::xenbus::BackendCtx {
            dom: dom.clone(),
            store: xs.store.clone(),
            backends: host.backends.clone(),
            shared_ram: mem.shared_file().map(|f| devices::vhost_user::SharedRam {
                file: f.clone(),
                host_addr: mem.host_base() as u64,
                size: ram,
            }),
        };
        let _ = host.xs.set(xs);
        let devices = crate::hotplug::boot_devices(ctx, cfg)?;
        let _ = host.devices.set(devices.0.clone());
        let mut vcpus = Vec::new();
        for (i, fd) in fds.into_iter().enumerate() {
            let mut cpuid = CpuId::new(policy.entries.len())
                .map_err(|e| VmError::Kvm(format!("cpuid: {e:?}")))?;
            for (k, e) in policy.entries.iter().enumerate() {
                let r = policy.lookup(e.leaf, e.sub, i as u32);
                let s = &mut cpuid.as_mut_slice()[k];
                s.function = e.leaf;
                s.index = e.sub;
                s.flags = if e.indexed {
                    kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                } else {
                    0
                };
                s.eax = r[0];
                s.ebx = r[1];
                s.ecx = r[2];
                s.edx = r[3];
            }
            fd.set_cpuid2(&cpuid).map_err(kerr("KVM_SET_CPUID2"))?;
            let mut msrs: Vec<kvm_msr_entry> =
                ring0::syscall_msrs(i as u32, profile.ring0_for(cfg.vcpus))
                    .iter()
                    .map(|&(index, data)| kvm_msr_entry {
                        index,
                        data,
                        ..Default::default()
                    })
                    .collect();
            msrs.push(kvm_msr_entry {
                index: 0x277,
                data: xen_shim::emulate::XEN_PAT,
                ..Default::default()
            });
            let msrs =
                Msrs::from_entries(&msrs).map_err(|e| VmError::Kvm(format!("msrs: {e:?}")))?;
            fd.set_msrs(&msrs).map_err(kerr("KVM_SET_MSRS"))?;
            align_guest_tsc(&fd)?;
            let mut pv = PvVcpu::new(i as u32, dom.clone());
            if i == 0 {
                pv.root_kernel = layout.pt_pfn;
                pv.kernel_sp = layout.rsp;
            }
            vcpus.push(Vcpu::new(
                fd,
                pv,
                host.clone(),
                mon.clone(),
                profile,
                cfg.vcpus,
            ));
        }
        let boot_regs = Regs {
            rip: layout.entry,
            rsp: layout.rsp,
            rsi: layout.rsi,
            rflags: 0x202,
            cs: xen_shim::abi::FLAT_KERNEL_CS,
            ss: xen_shim::abi::FLAT_KERNEL_SS,
            ..Default::default()
        };
        Ok(Vm {
            kvm,
            _vm: vm,
            dom,
            host,
            layout,
            vcpus,
            boot_regs,
            print_stats: false,
            _devices: devices,
        })
    }

    /// Run the guest until it shuts down.
    pub fn run(self) -> Outcome {
        self.run_keeping_devices().0
    }

    /// [`Self::run`], handing back the PV device backends still running: a
    /// domain preserved after it shut down (`on_poweroff = "preserve"`)
    /// keeps its disks open and its taps until it is destroyed, as on Xen.
    pub fn run_keeping_devices(self) -> (Outcome, crate::hotplug::DeviceOwner) {
        install_kick_handler();
        // Set-up is over: from here on (and for the boots after a reboot)
        // every thread of the monitor runs under the system-call filter.
        if let Err(e) = crate::seccomp::install() {
            log::error!("{e}");
            let o = Outcome::Crash(format!(
                "{e} (--no-seccomp or XENKVM_SECCOMP=0 runs without it)"
            ));
            return (o, self._devices);
        }
        let host = self.host.clone();
        let timer_host = Arc::downgrade(&host);
        let profile = crate::host_profile::get(&self.kvm).ok();
        let slop = profile.map(|p| p.timer_slop_ns()).unwrap_or(50_000);
        // Where vCPUs set their timers in ring 0, the timer thread reads
        // their data pages too.
        let fast = profile
            .filter(|p| p.ring0_for(self.vcpus.len() as u32).fast_paths)
            .and_then(|_| self.vcpus.first().map(|v| v.mon.clone()));
        let timer = std::thread::spawn(move || timer_thread(timer_host, slop, fast));
        let (tx, rx) = std::sync::mpsc::channel::<VcpuReport>();
        // vCPUs a restore gave a state start with vCPU 0.
        let restored: Vec<u32> = self
            .vcpus
            .iter()
            .skip(1)
            .filter(|v| v.down_regs.is_some())
            .map(|v| v.pv.id)
            .collect();
        let mut vcpus = self.vcpus.into_iter();
        let Some(vcpu0) = vcpus.next() else {
            return (Outcome::Crash("no vCPU".into()), self._devices);
        };
        let mut parked: Vec<Option<Vcpu>> = vec![None];
        parked.extend(vcpus.map(Some));
        let starter = Arc::new(Starter::new(parked, tx));
        starter.spawn(vcpu0, self.boot_regs);
        for id in restored {
            starter.up(id);
        }
        let mut exits: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut total = 0u64;
        let mut reg_ioctls = 0u64;
        let mut outcome = None;
        let mut add = |r: &VcpuReport| {
            reg_ioctls += r.reg_ioctls;
            for (k, v) in &r.exits_by_reason {
                *exits.entry(k).or_insert(0) += v;
            }
            total += r.exits;
        };
        while outcome.is_none() {
            let Ok(r) = rx.recv() else { break };
            add(&r);
            outcome = match &r.end {
                VcpuEnd::Shutdown(0) => Some(Outcome::Poweroff),
                VcpuEnd::Shutdown(1) => Some(Outcome::Reboot),
                VcpuEnd::Shutdown(3) => Some(Outcome::Crash(format!(
                    "the guest crashed (SCHEDOP_shutdown crash)\n{}",
                    r.dump
                ))),
                VcpuEnd::Shutdown(n) => Some(Outcome::Other(*n)),
                VcpuEnd::Crash(m) => {
                    Some(Outcome::Crash(format!("vCPU {}: {m}\n{}", r.id, r.dump)))
                }
                // Its thread cleared the online bit and parked it.
                VcpuEnd::Down => None,
                VcpuEnd::Stopped => host
                    .stop
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then_some(Outcome::Other(255)),
            };
        }
        host.stop_all();
        let threads =
            std::mem::take(&mut *starter.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        while let Ok(r) = rx.try_recv() {
            add(&r);
        }
        let _ = timer.join();
        let calls = self
            .dom
            .hypercall_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        log::info!("exits by reason: {exits:?}");
        log::info!("hypercalls by name: {calls:?}");
        log::info!("total exits: {total} (register ioctls: {reg_ioctls})");
        if self.print_stats {
            for (k, v) in &exits {
                eprintln!("xenkvm-stats exit {} {v}", k.replace(' ', "_"));
            }
            for (k, v) in &calls {
                eprintln!("xenkvm-stats hypercall {k} {v}");
            }
            eprintln!("xenkvm-stats exits_total {total}");
            eprintln!("xenkvm-stats register_ioctls {reg_ioctls}");
        }
        (outcome.unwrap_or(Outcome::Other(255)), self._devices)
    }
}

/// Make the vCPU's TSC read what the monitor's `rdtsc` reads: the domain's
/// clock (`Clock::tsc0`, the pvclock records, timer deadlines) assumes it.
/// KVM's TSC offset attribute sets that exactly; where it is missing, a
/// write of the host's TSC to IA32_TSC comes within an ioctl of it. A write
/// of an older value would leave the guest's clock behind the monitor's by
/// the set-up time (89 ms on an emulated AMD-V host): every timer the guest
/// set would then fire early and it would re-arm it in a loop.
fn align_guest_tsc(fd: &VcpuFd) -> Result<(), VmError> {
    let zero: u64 = 0;
    let attr = kvm_bindings::kvm_device_attr {
        group: kvm_bindings::KVM_VCPU_TSC_CTRL,
        attr: kvm_bindings::KVM_VCPU_TSC_OFFSET.into(),
        addr: &zero as *const u64 as u64,
        flags: 0,
    };
    // _IOW(KVMIO, 0xe3 / 0xe1, struct kvm_device_attr): kvm-ioctls offers
    // the vCPU attribute calls on aarch64 only.
    const KVM_HAS_DEVICE_ATTR: libc::c_ulong = 0x4018_aee3;
    const KVM_SET_DEVICE_ATTR: libc::c_ulong = 0x4018_aee1;
    // SAFETY: our own vCPU fd and a valid kvm_device_attr whose addr points
    // to a live u64 for the duration of the calls.
    let ok = unsafe {
        libc::ioctl(fd.as_raw_fd(), KVM_HAS_DEVICE_ATTR, &attr) == 0
            && libc::ioctl(fd.as_raw_fd(), KVM_SET_DEVICE_ATTR, &attr) == 0
    };
    if ok {
        log::debug!("guest TSC: KVM_VCPU_TSC_OFFSET = 0");
        return Ok(());
    }
    // SAFETY: rdtsc has no preconditions.
    let now = unsafe { core::arch::x86_64::_rdtsc() };
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x10,
        data: now,
        ..Default::default()
    }])
    .map_err(|e| VmError::Kvm(format!("msrs: {e:?}")))?;
    fd.set_msrs(&msrs)
        .map_err(kerr("KVM_SET_MSRS (IA32_TSC)"))?;
    log::debug!("guest TSC: no KVM_VCPU_TSC_OFFSET; IA32_TSC written");
    Ok(())
}

/// Kicks vCPUs whose timer deadline passed while they run guest code.
/// A deadline is only acted on `slop` ns after it passed (see
/// `HostProfile::timer_slop_ns`): an exit before then delivers it.
fn timer_thread(host: Weak<Host>, slop: u64, fast: Option<Arc<MonitorLayout>>) {
    let mut kicked: Vec<Option<(u64, u64)>> = Vec::new();
    loop {
        let Some(h) = host.upgrade() else { return };
        if h.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(dom) = h.domain.get().and_then(Weak::upgrade) else {
            return;
        };
        let mem = &*dom.mem;
        let now = dom.clock.now_ns(dom.platform.tsc());
        // A deadline set in ring 0 replaces the vCPU thread's: it is newer
        // (the vCPU thread takes it from the data page at its next exit).
        let deadline = |i: usize, s: &VcpuSignal| {
            fast.as_deref()
                .and_then(|l| ring0_fast::peek_deadline(mem, l, i as u32))
                .unwrap_or_else(|| s.deadline.load(Ordering::SeqCst))
        };
        let mut next = u64::MAX;
        kicked.resize(h.vcpus.len(), None);
        for (i, s) in h.vcpus.iter().enumerate() {
            let d = deadline(i, s).saturating_add(slop);
            if d <= now {
                // A due deadline in the data page stays there until the
                // vCPU takes it: kick once for it (it is the same one while
                // the vCPU's count of taken deadlines has not moved).
                let mark = (d, s.fast_taken.load(Ordering::SeqCst));
                if kicked[i] == Some(mark) {
                    continue;
                }
                kicked[i] = Some(mark);
                s.deadline.store(u64::MAX, Ordering::SeqCst);
                h.kick(i as u32);
            } else {
                next = next.min(d);
            }
        }
        let mut sleep = next.saturating_sub(now).clamp(20_000, 1_000_000);
        if let Some(l) = fast.as_deref() {
            // Deadlines the guest sets in ring 0 from now on must not be
            // earlier than our next look (else its code exits instead).
            // Publish the look, then read again: a deadline published in
            // between is either seen here or refused there. A smaller
            // look published later only makes the guest's check stricter.
            // (Terminates: a deadline the guest publishes once a look is
            // out is at or after that look, so `sleep` only shrinks.)
            loop {
                let look = now + sleep;
                for i in 0..h.vcpus.len() {
                    ring0_fast::set_armed(mem, l, i as u32, look);
                }
                let first = h
                    .vcpus
                    .iter()
                    .enumerate()
                    .map(|(i, s)| deadline(i, s).saturating_add(slop))
                    .filter(|&d| d > now)
                    .min()
                    .unwrap_or(u64::MAX);
                if first >= look || sleep <= 20_000 {
                    break;
                }
                sleep = first.saturating_sub(now).max(20_000);
            }
        }
        drop(dom);
        drop(h);
        std::thread::sleep(Duration::from_nanos(sleep));
    }
}

/// The processor brand string (leaves 0x80000002-0x80000004) as the host's
/// CPU reports it: KVM's supported table leaves it empty, Xen shows PV
/// guests the real one, and without it Linux names the CPU by family and
/// model in /proc/cpuinfo ("model name : 19/01").
fn add_brand_string(entries: &mut Vec<CpuidEntry>) {
    let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        if leaf > max_ext {
            return;
        }
        let r = core::arch::x86_64::__cpuid(leaf);
        entries.retain(|e| e.leaf != leaf);
        entries.push(CpuidEntry {
            leaf,
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
            ..Default::default()
        });
    }
}

/// KVM's CPUID table as the Xen core's entries (PV and PVH domains).
pub(crate) fn cpuid_entries(table: &[kvm_bindings::kvm_cpuid_entry2]) -> Vec<CpuidEntry> {
    table
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
        .collect()
}

/// The domain's clock, starting now: the TSC and the wall clock read
/// together, the TSC at `tsc_khz`.
pub(crate) fn clock_now(tsc_khz: u32) -> Clock {
    // SAFETY: rdtsc has no preconditions.
    let tsc0 = unsafe { core::arch::x86_64::_rdtsc() };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Clock {
        tsc0,
        scale: TimeScale::from_hz(u64::from(tsc_khz) * 1000),
        tsc_khz: tsc_khz.into(),
        wallclock_ns: wall,
    }
}
