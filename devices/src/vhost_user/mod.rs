//! PV disks served by vhost-user-blk backends (`backendtype=vhost-user`):
//! the xenbus side is blkback's (the same keys, states and reconnection),
//! and each connected frontend gets its own vhost-user connection whose
//! memory table holds the guest's RAM (a shared memfd) and the bridge's
//! shadow region. `blk` translates the ring; `conn` speaks vhost-user.

pub mod blk;
pub mod client;
pub mod conn;
pub mod image;
pub mod net;
pub mod shadow;
pub mod translate;
pub mod vring;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::blkback::{proto, vdev};
use crate::notify::Kick;
use crate::ring::{BackRing, GrantedPages};
use crate::xenbus::{ring_refs, BackendCtx, State, XenbusDev};
use conn::BlkInfo;

/// The guest's RAM as a backend may map it: the memfd and this process's
/// mapping of it (guest-physical 0 at `host_addr`).
#[derive(Clone)]
pub struct SharedRam {
    pub file: Arc<File>,
    pub host_addr: u64,
    /// Bytes of RAM given to backends (the monitor's own area above stays out).
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("cannot connect to the vhost-user socket: {0}")]
    Connect(std::io::Error),
    #[error("vhost-user {0}: {1}")]
    Protocol(&'static str, String),
    #[error("the vhost-user backend does not offer {0}")]
    Missing(&'static str),
    #[error("the bridge's ring memory: {0}")]
    Shadow(std::io::Error),
    #[error("{0:?} is not a Xen virtual device name")]
    BadVdev(String),
    #[error(
        "a vhost-user disk needs the guest's memory shared (it is when the domain boots with one)"
    )]
    NotShared,
    #[error("xenstore: {0:?}")]
    Store(xen_shim::xenstore::XsError),
    #[error(transparent)]
    Xenbus(#[from] crate::xenbus::XenbusError),
    #[error("cannot start the backend thread: {0}")]
    Thread(std::io::Error),
}

/// A disk whose backend listens on `socket`.
pub struct VhostBlkConfig {
    pub vdev: String,
    pub socket: PathBuf,
    pub read_only: bool,
    pub domain_name: String,
    /// Queues offered at most (the in-process backend offers the guest's
    /// vCPUs, up to 4); the backend's own count bounds it too.
    pub max_queues: u16,
}

/// A running vhost-user disk; stopped when dropped.
pub struct VhostBlkHandle {
    pub devid: u32,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for VhostBlkHandle {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Ask the backend what it serves (so that the features are known at
/// InitWait, as blkback's), create the device in xenstore and start it.
pub fn spawn(
    ctx: &BackendCtx,
    domid: u32,
    cfg: VhostBlkConfig,
) -> Result<VhostBlkHandle, VhostError> {
    let ram = ctx.shared_ram.clone().ok_or(VhostError::NotShared)?;
    let devid = vdev::devid(&cfg.vdev).ok_or_else(|| VhostError::BadVdev(cfg.vdev.clone()))?;
    let (fe, info) = conn::open(&cfg.socket)?;
    drop(fe);
    let devid_s = devid.to_string();
    let mode = if cfg.read_only { "r" } else { "w" };
    let params = cfg.socket.display().to_string();
    let paths = {
        let mut s = ctx.store.lock().unwrap_or_else(|e| e.into_inner());
        xen_shim::xenstore::add_device(
            &mut s,
            domid,
            0,
            "vbd",
            devid,
            &[("virtual-device", &devid_s), ("device-type", "disk")],
            &[
                ("domain", &cfg.domain_name),
                ("params", &params),
                ("type", "vhost-user"),
                ("mode", mode),
                ("dev", &cfg.vdev),
                ("device-type", "disk"),
                ("removable", "0"),
                ("bootable", "1"),
            ],
        )
        .map_err(VhostError::Store)?
    };
    let dev = XenbusDev::new(ctx.store.clone(), paths)?;
    let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(VhostError::Thread)?);
    let mut d = Device {
        ctx: ctx.clone(),
        dev,
        ram,
        socket: cfg.socket,
        info,
        read_only: cfg.read_only || info.read_only,
        name: cfg.vdev.clone(),
        queues: Vec::new(),
        max_queues: cfg.max_queues.clamp(1, conn::MAX_QUEUES),
    };
    d.advertise()?;
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vhu-{}", cfg.vdev))
        .spawn(move || d.run(&s))
        .map_err(VhostError::Thread)?;
    Ok(VhostBlkHandle {
        devid,
        stop,
        thread: Some(thread),
    })
}

/// One connected queue's bridge thread.
struct Queue {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    ctx: BackendCtx,
    port: u32,
    backend_id: u32,
}

impl Drop for Queue {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ctx.unbind_port(self.port, self.backend_id);
    }
}

struct Device {
    ctx: BackendCtx,
    dev: XenbusDev,
    ram: SharedRam,
    socket: PathBuf,
    info: BlkInfo,
    read_only: bool,
    name: String,
    /// The connected frontend's queues (none: not connected).
    queues: Vec<Queue>,
    /// Queues offered at most (the guest's vCPUs, up to 4).
    max_queues: u16,
}

impl Device {
    fn advertise(&self) -> Result<(), VhostError> {
        let segs = self.info.seg_max.map_or(blk::MAX_DATA_DESCS, |m| {
            (m as usize).min(blk::MAX_DATA_DESCS)
        });
        let mut kv = vec![
            ("feature-persistent", "1".to_string()),
            ("max-ring-page-order", blk::MAX_RING_ORDER.to_string()),
            ("feature-max-indirect-segments", segs.to_string()),
            ("multi-queue-max-queues", self.max_queues().to_string()),
        ];
        if self.info.flush {
            kv.push(("feature-flush-cache", "1".into()));
        }
        if self.info.max_discard_sectors.is_some() && !self.read_only {
            kv.extend(crate::vbd_states::discard_keys());
        }
        self.dev.write_be(&kv)?;
        self.dev.switch_state(State::InitWait)?;
        Ok(())
    }

    fn run(&mut self, stop: &EventFd) {
        while stop.read().is_err() {
            crate::vbd_states::step(self);
            self.dev.wait_change(Duration::from_millis(200));
        }
        self.queues.clear();
    }

    /// This disk's queue count: what the backend has, the guest's vCPUs
    /// (as the in-process backend) and [`conn::MAX_QUEUES`] allow.
    fn max_queues(&self) -> u16 {
        self.info.num_queues.min(self.max_queues).max(1)
    }

    fn connect(&mut self) -> Result<Vec<Queue>, String> {
        match self.dev.read_fe("protocol").as_deref() {
            None | Some("x86_64-abi") => {}
            Some(p) => return Err(format!("ring protocol {p:?} is not supported")),
        }
        let n = self.dev.read_fe_u64("multi-queue-num-queues").unwrap_or(1);
        if n == 0 || n > u64::from(self.max_queues()) {
            return Err(format!(
                "multi-queue-num-queues {n} > {}",
                self.max_queues()
            ));
        }
        let n = n as usize;
        let e = |e: std::io::Error| e.to_string();
        let (_, len) = blk::layout(n - 1);
        let shadow = Arc::new(shadow::Shadow::new(len).map_err(|e| e.to_string())?);
        let (mut fe, info) = conn::open(&self.socket).map_err(|e| e.to_string())?;
        if info.capacity != self.info.capacity {
            log::info!(
                "vhost-user {}: the backend's disk is now {} sectors",
                self.name,
                info.capacity
            );
        }
        if usize::from(info.num_queues) < n {
            return Err(format!("the backend now has {} queue(s)", info.num_queues));
        }
        conn::set_mem_table(&mut fe, Some(&self.ram), &shadow).map_err(|e| e.to_string())?;
        // Each queue's ring and port, then its virtqueue.
        let mut parts = Vec::new();
        for q in 0..n {
            let prefix = if n > 1 {
                format!("queue-{q}/")
            } else {
                String::new()
            };
            let refs = ring_refs(&self.dev, &prefix, blk::MAX_RING_ORDER)
                .ok_or_else(|| format!("no usable {prefix}ring-ref"))?;
            let port = self
                .dev
                .read_fe_u64(&format!("{prefix}event-channel"))
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| format!("no {prefix}event-channel"))?;
            let pages = GrantedPages::map(&self.ctx.dom, &refs)
                .map_err(|e| format!("{prefix}ring: {e}"))?;
            let kick = EventFd::new(EFD_NONBLOCK).map_err(e)?;
            let call = EventFd::new(EFD_NONBLOCK).map_err(e)?;
            let (layout, _) = blk::layout(q);
            let vring = vring::DriverRing::new(&shadow, layout);
            conn::start_queue(&mut fe, q, &shadow, layout, &kick, &call)
                .map_err(|e| e.to_string())?;
            parts.push((BackRing::new(pages, proto::ENTRY), port, kick, call, vring));
        }
        let fe = Arc::new(fe);
        let mut queues = Vec::new();
        for (q, (ring, port, kick, call, vring)) in parts.into_iter().enumerate() {
            let guest = EventFd::new(EFD_NONBLOCK).map_err(e)?;
            let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(e)?);
            let backend_id = self
                .ctx
                .bind_port(
                    port,
                    Arc::new(Kick::with_eventfd(guest.try_clone().map_err(e)?)),
                )
                .ok_or_else(|| format!("cannot bind event channel {port}"))?;
            let bridge = blk::Bridge {
                tr: blk::Translator {
                    ctx: self.ctx.clone(),
                    shadow: shadow.clone(),
                    vring,
                    info,
                    read_only: self.read_only || info.read_only,
                    name: format!("{}-q{q}", self.name),
                },
                ring,
                port,
                fe: fe.clone(),
                kick,
                call,
                guest,
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("vhu-{}-q{q}", self.name))
                .spawn(move || bridge.run());
            let thread = match thread {
                Ok(t) => t,
                Err(err) => {
                    self.ctx.unbind_port(port, backend_id);
                    return Err(err.to_string());
                }
            };
            queues.push(Queue {
                stop,
                thread: Some(thread),
                ctx: self.ctx.clone(),
                port,
                backend_id,
            });
        }
        self.dev
            .write_be(&[
                ("sectors", info.capacity.to_string()),
                ("info", if self.read_only { "4" } else { "0" }.to_string()),
                ("sector-size", "512".into()),
                ("physical-sector-size", "512".into()),
            ])
            .map_err(|e| e.to_string())?;
        log::info!(
            "vbd {}: connected to vhost-user backend {} ({} sectors, {n} queue(s))",
            self.name,
            self.socket.display(),
            info.capacity
        );
        Ok(queues)
    }
}

impl crate::vbd_states::DiskBackend for Device {
    fn xenbus(&self) -> &XenbusDev {
        &self.dev
    }
    fn label(&self) -> String {
        format!("vhost-user {}", self.name)
    }
    fn has_rings(&self) -> bool {
        !self.queues.is_empty()
    }
    fn connect_rings(&mut self) -> Result<(), String> {
        self.queues = self.connect()?;
        Ok(())
    }
    fn drop_rings(&mut self) {
        self.queues.clear();
    }
    fn offer(&self) {
        let _ = self.advertise();
    }
}
