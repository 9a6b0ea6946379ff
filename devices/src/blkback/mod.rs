//! The PV block backend (vbd): xenstore entries as libxl writes them, the
//! xenbus handshake as Linux's blkback does it (features at InitWait, the
//! disk's size and the rings at Connected, back to InitWait after the
//! frontend closed so that a second frontend can connect), and one thread
//! per ring serving requests off the vCPU threads.

pub mod io;
pub mod proto;
pub mod queue;
pub mod vdev;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use io::Disk;
use queue::Queue;

use crate::disk::DiskImage;
use crate::ring::{BackRing, GrantedPages};
use crate::xenbus::{ring_refs, BackendCtx, State, XenbusDev};

/// Largest `ring-page-order` accepted (16 pages: 512 requests).
pub const MAX_RING_ORDER: u32 = 4;

/// A disk to offer to the guest.
pub struct VbdConfig {
    /// Guest device name (`xvda`).
    pub vdev: String,
    pub image: Arc<dyn DiskImage>,
    pub read_only: bool,
    pub cdrom: bool,
    /// Host path, shown in xenstore as `params`.
    pub params: String,
    /// Queues offered (`multi-queue-max-queues`), at least 1.
    pub max_queues: u32,
    /// The domain's name (xenstore `domain` key).
    pub domain_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VbdError {
    #[error("{0:?} is not a Xen virtual device name (xvda, xvdb1, hda, sda, d0p1, or a number)")]
    BadVdev(String),
    #[error("xenstore: {0:?}")]
    Store(xen_shim::xenstore::XsError),
    #[error(transparent)]
    Xenbus(#[from] crate::xenbus::XenbusError),
    #[error("cannot start the backend thread: {0}")]
    Thread(std::io::Error),
}

/// A running vbd; its threads stop when it is dropped.
pub struct VbdHandle {
    pub devid: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for VbdHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Create the device in xenstore and start its backend.
pub fn spawn(ctx: &BackendCtx, domid: u32, cfg: VbdConfig) -> Result<VbdHandle, VbdError> {
    let devid = vdev::devid(&cfg.vdev).ok_or_else(|| VbdError::BadVdev(cfg.vdev.clone()))?;
    let devtype = if cfg.cdrom { "cdrom" } else { "disk" };
    let devid_s = devid.to_string();
    let mode = if cfg.read_only { "r" } else { "w" };
    let paths = {
        let mut s = ctx.store.lock().unwrap_or_else(|e| e.into_inner());
        xen_shim::xenstore::add_device(
            &mut s,
            domid,
            0,
            "vbd",
            devid,
            &[("virtual-device", &devid_s), ("device-type", devtype)],
            &[
                ("domain", &cfg.domain_name),
                ("params", &cfg.params),
                ("type", "qdisk"),
                ("mode", mode),
                ("dev", &cfg.vdev),
                ("device-type", devtype),
                ("removable", if cfg.cdrom { "1" } else { "0" }),
                ("bootable", "1"),
            ],
        )
        .map_err(VbdError::Store)?
    };
    let dev = XenbusDev::new(ctx.store.clone(), paths)?;
    let disk = Arc::new(Disk {
        sectors: cfg.image.size() / proto::SECTOR,
        read_only: cfg.read_only || cfg.image.read_only(),
        image: cfg.image.clone(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut vbd = Vbd {
        ctx: ctx.clone(),
        dev,
        disk,
        cdrom: cfg.cdrom,
        max_queues: cfg.max_queues.clamp(1, 16),
        name: cfg.vdev.clone(),
        queues: Vec::new(),
    };
    vbd.advertise()?;
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vbd-{}", cfg.vdev))
        .spawn(move || vbd.run(&s))
        .map_err(VbdError::Thread)?;
    Ok(VbdHandle {
        devid,
        stop,
        thread: Some(thread),
    })
}

struct Vbd {
    ctx: BackendCtx,
    dev: XenbusDev,
    disk: Arc<Disk>,
    cdrom: bool,
    max_queues: u32,
    name: String,
    queues: Vec<Queue>,
}

impl Vbd {
    /// What blkback writes before InitWait.
    fn advertise(&self) -> Result<(), VbdError> {
        let mut kv = vec![
            ("feature-flush-cache", "1".to_string()),
            ("feature-barrier", "1".to_string()),
            ("feature-persistent", "1".to_string()),
            ("max-ring-page-order", MAX_RING_ORDER.to_string()),
            (
                "feature-max-indirect-segments",
                proto::MAX_INDIRECT_SEGMENTS.to_string(),
            ),
            ("multi-queue-max-queues", self.max_queues.to_string()),
        ];
        if self.disk.image.discard_supported() && !self.disk.read_only {
            kv.extend(crate::vbd_states::discard_keys());
        }
        self.dev.write_be(&kv)?;
        self.dev.switch_state(State::InitWait)?;
        Ok(())
    }

    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            crate::vbd_states::step(self);
            self.dev.wait_change(Duration::from_millis(200));
        }
        self.queues.clear();
    }

    /// Map every queue's ring and bind its event channel.
    fn connect(&mut self) -> Result<(), String> {
        match self.dev.read_fe("protocol").as_deref() {
            None | Some("x86_64-abi") => {}
            Some(p) => return Err(format!("ring protocol {p:?} is not supported")),
        }
        let n = self.dev.read_fe_u64("multi-queue-num-queues").unwrap_or(1);
        if n == 0 || n > u64::from(self.max_queues) {
            return Err(format!("multi-queue-num-queues {n} > {}", self.max_queues));
        }
        for q in 0..n {
            let prefix = if n > 1 {
                format!("queue-{q}/")
            } else {
                String::new()
            };
            let refs = ring_refs(&self.dev, &prefix, MAX_RING_ORDER)
                .ok_or_else(|| format!("no usable {prefix}ring-ref"))?;
            let port = self
                .dev
                .read_fe_u64(&format!("{prefix}event-channel"))
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| format!("no {prefix}event-channel"))?;
            let pages = GrantedPages::map(&self.ctx.dom, &refs)
                .map_err(|e| format!("{prefix}ring: {e}"))?;
            let ring = BackRing::new(pages, proto::ENTRY);
            let queue = Queue::start(
                &self.ctx,
                format!("vbd-{}-q{q}", self.name),
                ring,
                port,
                self.disk.clone(),
            )
            .ok_or_else(|| format!("cannot bind event channel {port}"))?;
            self.queues.push(queue);
        }
        let mut info = 0u32;
        if self.cdrom {
            info |= 1;
        }
        if self.disk.read_only {
            info |= 4;
        }
        self.dev
            .write_be(&[
                ("sectors", self.disk.sectors.to_string()),
                ("info", info.to_string()),
                ("sector-size", "512".into()),
                ("physical-sector-size", "512".into()),
            ])
            .map_err(|e| e.to_string())?;
        log::info!(
            "vbd {}: connected ({} queue(s), {} sectors{})",
            self.name,
            n,
            self.disk.sectors,
            if self.disk.read_only {
                ", read-only"
            } else {
                ""
            }
        );
        Ok(())
    }
}

impl crate::vbd_states::DiskBackend for Vbd {
    fn xenbus(&self) -> &XenbusDev {
        &self.dev
    }
    fn label(&self) -> String {
        format!("vbd {}", self.name)
    }
    fn has_rings(&self) -> bool {
        !self.queues.is_empty()
    }
    fn connect_rings(&mut self) -> Result<(), String> {
        self.connect()
    }
    fn drop_rings(&mut self) {
        self.queues.clear();
    }
    fn offer(&self) {
        let _ = self.advertise();
    }
}

#[cfg(test)]
mod tests;
