//! The per-domain monitor process: the control API on `api.sock`, the
//! guest's boots, and the `on_poweroff` / `on_reboot` / `on_crash` actions.
//!
//! A monitor starts either with its domain (`xenkvm create -F`) or empty
//! (`xenkvm monitor --api-socket PATH`, what `xenkvm create` starts in the
//! background), in which case it waits for `POST /v1/domains`. The VM is
//! created and run on the main thread; API requests run on their own
//! threads and act through the current boot's `Host` and xenstore.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use api::control::{
    matches_domain, server, ApiError, Backend, ConsoleInfo, CreateRequest, DetachRequest, DiskInfo,
    DomainInfo, DomainOp, DomainState, NicInfo, ShutdownReason, VcpuInfo,
};
use api::xlcfg::{Action, DomainConfig};
use xen_shim::domain::Platform;

use super::console::ConsoleHub;
use super::registry::{create_private, write_private, Claim, RegistryError, RunDir};
use super::signals;
use crate::console::Current;
use crate::hotplug::{self, HotplugError, SharedDevices};
use crate::pvh::any::AnyVm;
use crate::pvh::vm::PvhVm;
use crate::vm::{Outcome, Vm, VmError};
use crate::{Prepared, RunArgs};

/// An empty monitor that gets no create request in this time exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Booting,
    Running,
    Shutdown(ShutdownReason),
    Dying,
}

/// The domain this monitor runs.
struct Running {
    claim: Claim,
    cfg: DomainConfig,
    uuid: String,
    started: u64,
    current: Current,
    hub: Arc<ConsoleHub>,
    boots: AtomicU32,
    phase: Mutex<Phase>,
    destroy: AtomicBool,
    wake: (Mutex<()>, Condvar),
    log: Option<PathBuf>,
    /// Created paused (`create -p`): the first boot waits for `unpause`.
    start_paused: bool,
    /// Devices attached and detached, for the next boots.
    ledger: Mutex<hotplug::Ledger>,
    /// A save waiting for the guest to suspend (crate::migrate).
    save: Mutex<Option<crate::migrate::job::SaveJob>>,
    /// A save or migration is under way (one at a time).
    saving: AtomicBool,
}

type Reply = SyncSender<Result<DomainInfo, ApiError>>;

/// A save or migration under way; clears the flag when dropped.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

pub struct Monitor {
    run: RunDir,
    foreground: bool,
    /// The API socket and log of an empty monitor, moved into the domain's
    /// directory once it has one.
    staging: Option<(PathBuf, Option<PathBuf>)>,
    requests: Mutex<Option<SyncSender<(CreateRequest, Reply)>>>,
    dom: Mutex<Option<Arc<Running>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CPU seconds used by this process (all its threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// A random (version 4) UUID.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ (u128::from(std::process::id()) << 64);
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn vm_error(e: VmError) -> ApiError {
    match e {
        VmError::NoKvm(_)
        | VmError::Kvm(_)
        | VmError::Memory(_)
        | VmError::Mem(_)
        | VmError::Xenstore(_) => ApiError::Internal(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    }
}

/// What the main thread keeps to boot the guest again.
struct Boot {
    args: RunArgs,
    prepared: Prepared,
    /// A restore's ring frames (migrate::scan): for the restored domain
    /// only (a reboot's fresh boot has the builder's).
    rings: Option<(u64, u64)>,
}

impl Boot {
    fn create_vm(&self, sock: &Path) -> Result<AnyVm, ApiError> {
        let mut cfg = self.prepared.vm_config(&self.args, sock);
        cfg.restore_rings = self.rings;
        let _ = std::fs::remove_file(sock);
        let mut vm = if self.args.guest_type == crate::GuestType::Pvh {
            AnyVm::Pvh(Box::new(
                PvhVm::create(&cfg).map_err(|e| ApiError::BadRequest(e.to_string()))?,
            ))
        } else {
            AnyVm::Pv(Box::new(Vm::create(&cfg).map_err(vm_error)?))
        };
        vm.set_print_stats(self.args.stats);
        Ok(vm)
    }
}

impl Running {
    fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    fn set_phase(&self, p: Phase) {
        *lock(&self.phase) = p;
        let _g = lock(&self.wake.0);
        self.wake.1.notify_all();
    }

    fn info(&self) -> DomainInfo {
        let phase = self.phase();
        let cur = self.current.get();
        let mut flags = DomainState::default();
        let mut vcpus = self.cfg.vcpus;
        let mut mem_mib = self.cfg.memory_mib;
        let mut maxmem_mib = self.cfg.maxmem_mib.max(self.cfg.memory_mib);
        match phase {
            Phase::Booting => flags.running = true,
            Phase::Running => {
                if let Some((host, dom)) = &cur {
                    let online = dom.online.load(Ordering::SeqCst);
                    vcpus = online.count_ones();
                    // As xl list: the reservation, and the domain's maximum.
                    mem_mib = crate::balloon::current_mib(dom);
                    maxmem_mib = crate::balloon::max_mib(dom);
                    flags.paused = host.control.is_paused();
                    // As in Xen, a paused domain shows only `p`.
                    flags.blocked = !flags.paused
                        && online != 0
                        && host.control.blocked_mask() & online == online;
                    flags.running = !flags.paused && !flags.blocked;
                }
            }
            Phase::Shutdown(r) => {
                flags.shutdown = true;
                flags.reason = Some(r);
            }
            Phase::Dying => flags.dying = true,
        }
        let path = |p: PathBuf| p.display().to_string();
        DomainInfo {
            id: self.claim.id,
            name: self.claim.name.clone(),
            uuid: self.uuid.clone(),
            state: flags.letters(),
            flags,
            mem_mib,
            maxmem_mib,
            vcpus,
            max_vcpus: self.cfg.vcpus,
            time_s: cpu_seconds(),
            pid: std::process::id(),
            started: self.started,
            boots: self.boots.load(Ordering::SeqCst),
            on_poweroff: self.cfg.on_poweroff.to_string(),
            on_reboot: self.cfg.on_reboot.to_string(),
            on_crash: self.cfg.on_crash.to_string(),
            dir: path(self.claim.dir.clone()),
            xenstore_socket: path(self.claim.xenstore_socket()),
            console_socket: path(self.claim.console_socket()),
            log: self.log.clone().map(path).unwrap_or_default(),
        }
    }

    /// Write `what` to the guest's `control/shutdown`, as xl does.
    fn control_shutdown(&self, what: &str) -> Result<(), ApiError> {
        self.write_control("shutdown", what)
    }

    /// Claim the domain for a save or migration (released when dropped).
    fn one_at_a_time(&self) -> Result<Busy<'_>, ApiError> {
        if self.cfg.domain_type != api::xlcfg::DomainType::Pv {
            return Err(ApiError::Conflict(format!(
                "save and migration are for PV domains; this one is {}",
                self.cfg.domain_type.as_str()
            )));
        }
        if self.saving.swap(true, Ordering::SeqCst) {
            return Err(ApiError::Conflict(
                "a save or migration of this domain is already under way".into(),
            ));
        }
        Ok(Busy(&self.saving))
    }

    /// The running domain's host and Xen state (none while it starts).
    fn host_and_domain(
        &self,
    ) -> Result<(Arc<crate::platform::Host>, Arc<xen_shim::domain::Domain>), ApiError> {
        self.current
            .get()
            .ok_or_else(|| ApiError::Conflict("the domain is starting".into()))
    }

    /// Ask the guest to suspend (control/shutdown = suspend) and wait until
    /// the run loop has sent it to `dest`.
    fn suspend_for(
        &self,
        dest: crate::migrate::job::Dest,
    ) -> Result<api::control::SaveInfo, ApiError> {
        self.host_and_domain()?;
        let (tx, rx) = sync_channel(1);
        {
            let mut g = lock(&self.save);
            if g.is_some() {
                return Err(ApiError::Conflict("a save is already under way".into()));
            }
            *g = Some(crate::migrate::job::SaveJob {
                dest,
                asked: std::time::Instant::now(),
                reply: tx,
            });
        }
        if let Err(e) = self.control_shutdown("suspend") {
            lock(&self.save).take();
            return Err(e);
        }
        match rx.recv_timeout(crate::migrate::job::SUSPEND_TIMEOUT) {
            Ok(res) => res,
            Err(_) => {
                if lock(&self.save).take().is_some() {
                    return Err(ApiError::Conflict(
                        "the guest did not suspend (control/shutdown = suspend) in time".into(),
                    ));
                }
                // The guest suspended just now: the run loop has the job.
                rx.recv()
                    .map_err(|_| ApiError::Internal("the save was lost".into()))?
            }
        }
    }

    /// Write `value` to the guest's `control/NODE` in its xenstore.
    fn write_control(&self, node: &str, value: &str) -> Result<(), ApiError> {
        self.write_domain_node(&format!("control/{node}"), value)
    }

    /// Write `value` to `/local/domain/<id>/NODE` in the guest's xenstore.
    fn write_domain_node(&self, node: &str, value: &str) -> Result<(), ApiError> {
        match self.phase() {
            Phase::Running => {}
            Phase::Booting => return Err(ApiError::Conflict("the domain is starting".into())),
            Phase::Shutdown(_) => return Err(ApiError::Conflict("the domain is shut down".into())),
            Phase::Dying => return Err(ApiError::Conflict("the domain is dying".into())),
        }
        let (host, dom) = self
            .current
            .get()
            .ok_or_else(|| ApiError::Conflict("the domain is not running".into()))?;
        let xs = host
            .xs
            .get()
            .ok_or_else(|| ApiError::Internal("the domain has no xenstore".into()))?;
        let path = format!("/local/domain/{}/{node}", dom.layout.domid);
        lock(&xs.store)
            .write(&path, value)
            .map_err(|e| ApiError::Internal(format!("xenstore write {path}: {e:?}")))?;
        log::info!("wrote {value} to {path}");
        Ok(())
    }

    /// The current boot's devices (a running domain only).
    fn devices(&self) -> Result<SharedDevices, ApiError> {
        match self.phase() {
            Phase::Running => {}
            _ => return Err(ApiError::Conflict("the domain is not running".into())),
        }
        self.current
            .get()
            .and_then(|(host, _)| host.devices.get().cloned())
            .ok_or_else(|| ApiError::Conflict("the domain is not running".into()))
    }

    /// `xl vcpu-set`: vCPUs below `count` online, the others offline, in
    /// xenstore `cpu/N/availability` (the guest's CPU hotplug reads it).
    fn vcpu_set(&self, count: u32) -> Result<(), ApiError> {
        let max = self.cfg.vcpus;
        if count == 0 || count > max {
            return Err(ApiError::BadRequest(format!(
                "cannot set {count} vCPUs: the domain has 1 to {max}"
            )));
        }
        for n in 0..max {
            let state = if n < count { "online" } else { "offline" };
            self.write_domain_node(&format!("cpu/{n}/availability"), state)?;
        }
        Ok(())
    }

    /// `xl mem-set` / `xl mem-max` (crate::balloon): check and apply to the
    /// domain, then write `memory/target` / `memory/static-max`.
    fn memory(&self, req: &api::control::MemoryRequest) -> Result<(), ApiError> {
        let (host, dom) = match (self.phase(), self.current.get()) {
            (Phase::Running, Some(c)) => c,
            _ => return Err(ApiError::Conflict("the domain is not running".into())),
        };
        let read_kib = |node: &str| -> Option<u64> {
            let xs = host.xs.get()?;
            let path = format!("/local/domain/{}/memory/{node}", dom.layout.domid);
            let v = lock(&xs.store).read(&path).ok()?;
            String::from_utf8_lossy(&v).trim().parse().ok()
        };
        let bad = |e: crate::balloon::BalloonError| ApiError::BadRequest(e.to_string());
        let region = crate::balloon::region_mib(&dom);
        let mut max_mib = read_kib("static-max").map_or(region, |k| k >> 10);
        if let Some(m) = req.max_mib {
            let target = req
                .target_mib
                .or_else(|| read_kib("target").map(|k| k >> 10))
                .unwrap_or(0);
            let kib = crate::balloon::set_max(&dom, m, target).map_err(bad)?;
            self.write_domain_node("memory/static-max", &kib.to_string())?;
            max_mib = m;
        }
        if let Some(t) = req.target_mib {
            let kib = crate::balloon::set_target(&dom, t, max_mib).map_err(bad)?;
            self.write_domain_node("memory/target", &kib.to_string())?;
        }
        Ok(())
    }

    /// The vCPUs: those of the current boot, or the configured count
    /// (offline) while there is none.
    fn vcpus(&self) -> Vec<VcpuInfo> {
        match (self.phase(), self.current.get()) {
            (Phase::Running, Some((host, dom))) => super::vcpus::infos(&host, &dom),
            _ => (0..self.cfg.vcpus)
                .map(|id| VcpuInfo {
                    id,
                    online: false,
                    running: false,
                    blocked: false,
                    cpu: None,
                    time_s: 0.0,
                    affinity: "all".into(),
                })
                .collect(),
        }
    }

    fn pause(&self, paused: bool) -> Result<(), ApiError> {
        match self.phase() {
            Phase::Running => {}
            Phase::Booting => return Err(ApiError::Conflict("the domain is starting".into())),
            Phase::Shutdown(_) => return Err(ApiError::Conflict("the domain is shut down".into())),
            Phase::Dying => return Err(ApiError::Conflict("the domain is dying".into())),
        }
        let (host, _) = self
            .current
            .get()
            .ok_or_else(|| ApiError::Conflict("the domain is not running".into()))?;
        host.control.set_paused(paused);
        if paused {
            for v in 0..host.vcpus.len() as u32 {
                host.kick(v);
            }
        }
        Ok(())
    }

    fn destroy(&self) {
        self.destroy.store(true, Ordering::SeqCst);
        self.set_phase(Phase::Dying);
        if let Some((host, _)) = self.current.get() {
            host.stop_all();
            host.control.wake();
        }
    }

    /// Wait until destroyed (a preserved domain).
    fn wait_destroy(&self) {
        let mut g = lock(&self.wake.0);
        while !self.destroy.load(Ordering::SeqCst) {
            g = match self.wake.1.wait_timeout(g, Duration::from_millis(500)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Write the guest's memory to `<run>/dumps/<name>-<time>.core` (raw
    /// pseudo-physical memory, page 0 first).
    fn coredump(&self, run: &RunDir, dom: &xen_shim::domain::Domain) {
        let dir = run.dumps();
        let mut path = dir.join(format!("{}-{}.core", self.claim.name, now_s()));
        let mut write = || -> std::io::Result<()> {
            use std::io::Write;
            run.ensure(&dir).map_err(std::io::Error::other)?;
            // 0600, new, never through a link: it is the guest's whole memory.
            let mut n = 0;
            let f = loop {
                match create_private(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                        n += 1;
                        path = dir.join(format!("{}-{}.{n}.core", self.claim.name, now_s()));
                    }
                    r => break r?,
                }
            };
            let mut f = std::io::BufWriter::new(f);
            let mut buf = vec![0u8; 1 << 20];
            let total = dom.layout.nr_pages << 12;
            let mut off = 0;
            while off < total {
                let n = (total - off).min(buf.len() as u64) as usize;
                if dom.mem.read(off, &mut buf[..n]).is_err() {
                    buf[..n].fill(0);
                }
                f.write_all(&buf[..n])?;
                off += n as u64;
            }
            f.flush()
        };
        match write() {
            Ok(()) => eprintln!("xenkvm: guest memory dumped to {}", path.display()),
            Err(e) => eprintln!("xenkvm: core dump to {} failed: {e}", path.display()),
        }
    }
}

impl Monitor {
    fn new(run: RunDir, foreground: bool, staging: Option<(PathBuf, Option<PathBuf>)>) -> Monitor {
        Monitor {
            run,
            foreground,
            staging,
            requests: Mutex::new(None),
            dom: Mutex::new(None),
        }
    }

    /// SIGTERM/SIGINT/SIGHUP destroy the domain (its files and id go with
    /// it). Call before any thread starts.
    fn destroy_on_termination(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        signals::handle_termination(move |_| {
            if let Some(r) = me.upgrade().and_then(|m| lock(&m.dom).clone()) {
                r.destroy();
            }
        });
    }

    fn running(&self, dom: &str) -> Result<Arc<Running>, ApiError> {
        let g = lock(&self.dom);
        match &*g {
            Some(r) if matches_domain(dom, r.claim.id, &r.claim.name) => Ok(r.clone()),
            _ => Err(ApiError::unknown_domain(dom)),
        }
    }

    /// Claim the name, build the VM (main thread only).
    fn start(&self, req: CreateRequest) -> Result<(Arc<Running>, AnyVm, Boot), ApiError> {
        if let Some(r) = &*lock(&self.dom) {
            return Err(ApiError::Conflict(format!(
                "this monitor already runs domain '{}'",
                r.claim.name
            )));
        }
        let cfg = req.config;
        let dir = PathBuf::from(req.config_dir.unwrap_or_else(|| ".".into()));
        let args =
            crate::create::run_args(&cfg, &dir).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let claim = self
            .run
            .claim(&cfg.name, std::process::id())
            .map_err(|e| match e {
                RegistryError::Exists(_) => ApiError::Conflict(e.to_string()),
                RegistryError::BadName(..) => ApiError::BadRequest(e.to_string()),
                _ => ApiError::Internal(e.to_string()),
            })?;
        let fail = |claim: &Claim, e: ApiError| {
            claim.release();
            e
        };
        // pygrub's kernel and initrd go in the domain's own directory.
        let prepared = match crate::prepare(&args, &claim.dir) {
            Ok(p) => p,
            Err(e) => return Err(fail(&claim, ApiError::BadRequest(crate::report(&e)))),
        };
        // A save file (not a migration's socket) may come from Xen, whose
        // builder put the rings elsewhere: the domain is built with the guest's.
        let rings = match &req.restore {
            Some(p) if Path::new(p).is_file() => {
                match crate::migrate::scan::ring_frames(Path::new(p)) {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(fail(
                            &claim,
                            ApiError::BadRequest(format!("restore from {p}: {e}")),
                        ))
                    }
                }
            }
            _ => None,
        };
        let mut boot = Boot {
            args,
            prepared,
            rings,
        };
        // Inside its xenstore the guest has its id from `list`.
        boot.args.domid = Some(u16::try_from(claim.id).unwrap_or(1).clamp(1, 0x7fef));
        let json = serde_json::to_string_pretty(&cfg).unwrap_or_default();
        let _ = write_private(&claim.dir.join("config.json"), json.as_bytes());
        let current = Current::default();
        let hub = ConsoleHub::new(current.clone(), self.foreground);
        if let Err(e) = hub.serve(&claim.console_socket()) {
            return Err(fail(
                &claim,
                ApiError::Internal(format!("console socket: {e}")),
            ));
        }
        let mut vm = match boot.create_vm(&claim.xenstore_socket()) {
            Ok(vm) => vm,
            Err(e) => return Err(fail(&claim, e)),
        };
        boot.rings = None;
        if let Some(path) = &req.restore {
            let restored = match &mut vm {
                AnyVm::Pv(v) => crate::migrate::job::restore_file(Path::new(path), v),
                AnyVm::Pvh(_) => Err(ApiError::BadRequest(
                    "restore is for PV domains: the configuration in the file is not type = \"pv\""
                        .into(),
                )),
            };
            if let Err(e) = restored {
                return Err(fail(&claim, e));
            }
        }
        let mut log = None;
        if let Some((sock, staged_log)) = &self.staging {
            if let Err(e) = std::fs::rename(sock, claim.api_socket()) {
                return Err(fail(&claim, ApiError::Internal(format!("api socket: {e}"))));
            }
            if let Some(l) = staged_log {
                if std::fs::rename(l, claim.log()).is_ok() {
                    log = Some(claim.log());
                }
            }
        }
        let running = Arc::new(Running {
            uuid: cfg.uuid.clone().unwrap_or_else(random_uuid),
            cfg,
            started: now_s(),
            current,
            hub,
            boots: AtomicU32::new(0),
            phase: Mutex::new(Phase::Booting),
            destroy: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            log,
            claim,
            start_paused: req.paused,
            ledger: Mutex::new(hotplug::Ledger::default()),
            save: Mutex::new(None),
            saving: AtomicBool::new(false),
        });
        *lock(&self.dom) = Some(running.clone());
        Ok((running, vm, boot))
    }

    /// Boot the guest until the domain is destroyed; returns the exit code.
    fn run_loop(&self, r: &Arc<Running>, first: AnyVm, boot: &Boot) -> ExitCode {
        let mut next = Some(first);
        let name = r.claim.name.clone();
        let code = loop {
            let vm = match next.take() {
                Some(vm) => vm,
                None => match boot.create_vm(&r.claim.xenstore_socket()) {
                    Ok(vm) => {
                        if let Some(d) = vm.host().devices.get() {
                            lock(&r.ledger).replay(d);
                        }
                        vm
                    }
                    Err(e) => {
                        eprintln!("xenkvm: cannot start domain {name} again: {e}");
                        break ExitCode::from(1);
                    }
                },
            };
            let host = vm.host().clone();
            let dom = vm.dom().clone();
            let _ = host.control.sink.set(r.hub.sink());
            r.current.set(&host, &dom);
            r.boots.fetch_add(1, Ordering::SeqCst);
            if signals::received().is_some() {
                // Terminated before the handler could see the domain.
                r.destroy();
            }
            if r.destroy.load(Ordering::SeqCst) {
                break ExitCode::SUCCESS;
            }
            if r.start_paused && r.boots.load(Ordering::SeqCst) == 1 {
                // `create -p`: the vCPUs wait at the pause gate.
                host.control.set_paused(true);
            }
            r.set_phase(Phase::Running);
            log::info!("domain {name} (id {}) running", r.claim.id);
            // The devices live until the end of this boot: through the wait of
            // a preserved domain, dropped before a restart builds new ones.
            let (outcome, devices) = vm.run_keeping_devices();
            if host.escaped.load(Ordering::SeqCst) {
                eprintln!("\r\nxenkvm: stopped by the console escape (Ctrl-])");
                break ExitCode::from(130);
            }
            if let Some(sig) = signals::received() {
                eprintln!(
                    "\r\nxenkvm: domain {name} stopped by {}",
                    signals::name(sig)
                );
                break ExitCode::from(128 + sig as u8);
            }
            if r.destroy.load(Ordering::SeqCst) {
                eprintln!("xenkvm: domain {name} destroyed");
                break ExitCode::SUCCESS;
            }
            r.set_phase(Phase::Booting);
            let cfg = &r.cfg;
            let (reason, action) = match &outcome {
                Outcome::Poweroff => (ShutdownReason::Poweroff, cfg.on_poweroff),
                Outcome::Reboot => (ShutdownReason::Reboot, cfg.on_reboot),
                Outcome::Crash(msg) => {
                    eprintln!("\r\nxenkvm: guest crashed: {msg}");
                    eprintln!("xenkvm: last console lines:\n{}", host.last_lines(15));
                    (ShutdownReason::Crash, cfg.on_crash)
                }
                Outcome::Other(n) => {
                    let reason = ShutdownReason::from_code(*n);
                    let action = match reason {
                        ShutdownReason::Watchdog => cfg.on_watchdog,
                        ShutdownReason::SoftReset => cfg.on_soft_reset,
                        ShutdownReason::Suspend => {
                            // Backends stop first: none writes guest memory
                            // behind the image.
                            drop(devices);
                            let json = serde_json::to_string(&r.cfg).unwrap_or_default();
                            let job = lock(&r.save).take();
                            let create = || match boot.create_vm(&r.claim.xenstore_socket())? {
                                AnyVm::Pv(v) => Ok(*v),
                                AnyVm::Pvh(_) => Err(ApiError::Internal(
                                    "a PV domain's restart built a PVH one".into(),
                                )),
                            };
                            match crate::migrate::job::after_suspend(
                                job, &json, &host, &dom, create,
                            ) {
                                Some(vm) => {
                                    if let Some(d) = vm.host.devices.get() {
                                        lock(&r.ledger).replay(d);
                                    }
                                    next = Some(AnyVm::Pv(Box::new(vm)));
                                    Action::Restart
                                }
                                None => Action::Destroy,
                            }
                        }
                        _ => cfg.on_crash,
                    };
                    (reason, action)
                }
            };
            eprintln!("xenkvm: domain {name} shut down ({reason:?}); action: {action}");
            let exit = if reason == ShutdownReason::Crash {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
            match action {
                Action::Destroy => break exit,
                Action::Restart | Action::RenameRestart | Action::SoftReset => {}
                Action::Preserve => {
                    r.set_phase(Phase::Shutdown(reason));
                    r.wait_destroy();
                    break exit;
                }
                Action::CoredumpDestroy => {
                    r.coredump(&self.run, &dom);
                    break exit;
                }
                Action::CoredumpRestart => r.coredump(&self.run, &dom),
            }
            eprintln!("xenkvm: starting domain {name} again");
        };
        r.set_phase(Phase::Dying);
        r.claim.release();
        code
    }
}

impl Backend for Monitor {
    fn list(&self) -> Vec<DomainInfo> {
        lock(&self.dom).iter().map(|r| r.info()).collect()
    }

    fn create(&self, req: CreateRequest) -> Result<DomainInfo, ApiError> {
        if let Some(r) = &*lock(&self.dom) {
            return Err(ApiError::Conflict(format!(
                "this monitor already runs domain '{}'",
                r.claim.name
            )));
        }
        let tx = lock(&self.requests).clone().ok_or_else(|| {
            ApiError::Conflict("this monitor does not take create requests".into())
        })?;
        let (rtx, rrx) = sync_channel(1);
        tx.send((req, rtx))
            .map_err(|_| ApiError::Conflict("this monitor is shutting down".into()))?;
        rrx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| ApiError::Internal("the monitor did not answer".into()))?
    }

    fn info(&self, dom: &str) -> Result<DomainInfo, ApiError> {
        self.running(dom).map(|r| r.info())
    }

    fn op(&self, dom: &str, op: DomainOp) -> Result<DomainInfo, ApiError> {
        let r = self.running(dom)?;
        match op {
            DomainOp::Pause => r.pause(true)?,
            DomainOp::Resume => r.pause(false)?,
            DomainOp::Shutdown => r.control_shutdown("poweroff")?,
            DomainOp::Reboot => r.control_shutdown("reboot")?,
            DomainOp::Destroy => r.destroy(),
        }
        Ok(r.info())
    }

    fn console(&self, dom: &str) -> Result<ConsoleInfo, ApiError> {
        let r = self.running(dom)?;
        Ok(ConsoleInfo {
            socket: r.claim.console_socket().display().to_string(),
            clients: r.hub.clients(),
        })
    }

    fn vcpus(&self, dom: &str) -> Result<Vec<VcpuInfo>, ApiError> {
        self.running(dom).map(|r| r.vcpus())
    }

    fn vcpu_set(&self, dom: &str, count: u32) -> Result<DomainInfo, ApiError> {
        let r = self.running(dom)?;
        r.vcpu_set(count)?;
        Ok(r.info())
    }

    fn memory(&self, dom: &str, req: &api::control::MemoryRequest) -> Result<DomainInfo, ApiError> {
        let r = self.running(dom)?;
        r.memory(req)?;
        Ok(r.info())
    }

    fn save(
        &self,
        dom: &str,
        req: &api::control::SaveRequest,
    ) -> Result<api::control::SaveInfo, ApiError> {
        let r = self.running(dom)?;
        let _busy = r.one_at_a_time()?;
        let dest = crate::migrate::job::open_save_file(Path::new(&req.path))?;
        r.suspend_for(dest)
    }

    fn migrate(
        &self,
        dom: &str,
        req: &api::control::MigrateRequest,
    ) -> Result<api::control::SaveInfo, ApiError> {
        let r = self.running(dom)?;
        let _busy = r.one_at_a_time()?;
        let (host, d) = r.host_and_domain()?;
        let log = host
            .dirty_log
            .get()
            .ok_or_else(|| ApiError::Internal("no dirty log".into()))?;
        let conn = std::os::unix::net::UnixStream::connect(&req.socket)
            .map_err(|e| ApiError::BadRequest(format!("{}: {e}", req.socket)))?;
        let json = serde_json::to_string(&r.cfg).unwrap_or_default();
        let pre =
            crate::migrate::live::PreCopy::run(Box::new(conn), &json, &d, log).map_err(|e| {
                log.stop();
                ApiError::Internal(format!("migration failed: {e}"))
            })?;
        r.suspend_for(crate::migrate::job::Dest::Live(Box::new(pre)))
            .inspect_err(|_| log.stop())
    }

    fn sysrq(&self, dom: &str, key: char) -> Result<DomainInfo, ApiError> {
        let r = self.running(dom)?;
        r.write_control("sysrq", &key.to_string())?;
        Ok(r.info())
    }

    fn disks(&self, dom: &str) -> Result<Vec<DiskInfo>, ApiError> {
        let r = self.running(dom)?;
        Ok(r.devices().map(|d| lock(&d).disks()).unwrap_or_default())
    }

    fn disk_attach(&self, dom: &str, spec: &str) -> Result<DiskInfo, ApiError> {
        let r = self.running(dom)?;
        let d = r.devices()?;
        let info = lock(&d).attach_disk(spec).map_err(hotplug_error)?;
        lock(&r.ledger).disk_attached(info.devid, spec);
        Ok(info)
    }

    fn disk_detach(&self, dom: &str, id: &str, req: &DetachRequest) -> Result<(), ApiError> {
        let r = self.running(dom)?;
        let devid = hotplug::detach_disk(&r.devices()?, id, req.force, req.timeout())
            .map_err(hotplug_error)?;
        lock(&r.ledger).disk_detached(devid);
        Ok(())
    }

    fn nics(&self, dom: &str) -> Result<Vec<NicInfo>, ApiError> {
        let r = self.running(dom)?;
        Ok(r.devices().map(|d| lock(&d).nics()).unwrap_or_default())
    }

    fn nic_attach(&self, dom: &str, spec: &str) -> Result<NicInfo, ApiError> {
        let r = self.running(dom)?;
        let d = r.devices()?;
        let info = lock(&d).attach_vif(spec).map_err(hotplug_error)?;
        lock(&r.ledger).vif_attached(info.devid, spec);
        Ok(info)
    }

    fn nic_detach(&self, dom: &str, id: &str, req: &DetachRequest) -> Result<(), ApiError> {
        let r = self.running(dom)?;
        let devid = hotplug::detach_nic(&r.devices()?, id, req.force, req.timeout())
            .map_err(hotplug_error)?;
        lock(&r.ledger).vif_detached(devid);
        Ok(())
    }
}

fn hotplug_error(e: HotplugError) -> ApiError {
    match e {
        HotplugError::Spec(_) | HotplugError::Open(_) => ApiError::BadRequest(e.to_string()),
        HotplugError::NotFound(_) => ApiError::NotFound(e.to_string()),
        HotplugError::Conflict(_) | HotplugError::Limit(_) | HotplugError::Timeout(_) => {
            ApiError::Conflict(e.to_string())
        }
        HotplugError::Backend(_) => ApiError::Internal(e.to_string()),
    }
}

/// `xenkvm monitor --api-socket PATH`: wait for a create request on the
/// socket, then run that domain.
pub fn serve_empty(run: RunDir, api_socket: PathBuf, log: Option<PathBuf>) -> ExitCode {
    let mon = Arc::new(Monitor::new(
        run,
        false,
        Some((api_socket.clone(), log.clone())),
    ));
    mon.destroy_on_termination();
    let (tx, rx): (_, Receiver<(CreateRequest, Reply)>) = sync_channel(1);
    *lock(&mon.requests) = Some(tx);
    let server = match server::serve(&api_socket, mon.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xenkvm: {e}");
            return ExitCode::from(1);
        }
    };
    let cleanup = || {
        let _ = std::fs::remove_file(&api_socket);
        if let Some(l) = &log {
            let _ = std::fs::remove_file(l);
        }
    };
    let idle = std::time::Instant::now();
    loop {
        let (req, reply) = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(x) => x,
            Err(RecvTimeoutError::Timeout)
                if idle.elapsed() < IDLE_TIMEOUT && signals::received().is_none() =>
            {
                continue
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                eprintln!("xenkvm: no create request; exiting");
                server.stop();
                cleanup();
                return ExitCode::from(1);
            }
        };
        match mon.start(req) {
            Ok((r, vm, boot)) => {
                *lock(&mon.requests) = None;
                let _ = reply.send(Ok(r.info()));
                eprintln!(
                    "xenkvm: domain {} (id {}) created; xenstore: export XENSTORED_PATH={}",
                    r.claim.name,
                    r.claim.id,
                    r.claim.xenstore_socket().display()
                );
                let code = mon.run_loop(&r, vm, &boot);
                server.stop();
                // A save or migration is answered as the domain ends.
                server.drain(Duration::from_secs(5));
                return code;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// `xenkvm create -F`: run the domain in this process, console on the
/// terminal (and on `console.sock`), API on `api.sock`.
pub fn run_foreground(run: RunDir, req: CreateRequest) -> Result<ExitCode, ApiError> {
    let mon = Arc::new(Monitor::new(run, true, None));
    mon.destroy_on_termination();
    let (r, vm, boot) = mon.start(req)?;
    let server = match server::serve(&r.claim.api_socket(), mon.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("{e}");
            None
        }
    };
    eprintln!(
        "xenkvm: domain {} (id {}) xenstore: export XENSTORED_PATH={}",
        r.claim.name,
        r.claim.id,
        r.claim.xenstore_socket().display()
    );
    crate::console::raw_mode();
    crate::console::spawn_input(r.current.clone());
    let code = mon.run_loop(&r, vm, &boot);
    crate::console::restore();
    if let Some(s) = server {
        s.stop();
        s.drain(Duration::from_secs(5));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
        assert_ne!(u, random_uuid());
    }
}
