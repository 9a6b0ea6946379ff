//! The PV disks and nics of one boot, added and removed while the guest
//! runs, as xl does it (`block-attach`, `network-detach`, ...).
//!
//! Attach writes the device's frontend and backend directories in one
//! transaction (state Initialising, see `xen_shim::xenstore::add_device`)
//! and starts its backend thread; the guest's xenbus watch on `device`
//! finds the new directory and its frontend connects. Detach is libxl's
//! removal: the backend goes to Closing (`online` 0), the guest's frontend
//! closes (state 6), then the backend thread stops, the image or tap is
//! released and both directories go (with their parents once empty). A
//! guest that keeps the device (blkfront refuses while it is mounted)
//! leaves it attached after the timeout, with a message; `force` removes
//! it anyway, as `xl block-detach -f` does.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use api::control::{DiskInfo, NicInfo};
use api::xlcfg::{Access, DevType, DiskSpec, VifSpec};
use devices::blkback::{self, VbdConfig};
use devices::netback::{self, mac, VifConfig, VifHandle};
use devices::xenbus::BackendCtx;
use xen_shim::xenstore::{DevicePaths, Store};

use crate::pvdev::{self, OpenDisk};

mod detach;
mod ledger;
pub use detach::{detach_disk, detach_nic};
pub use ledger::Ledger;

/// Disks per domain. Xen has no fixed count (xenstore's node quota bounds
/// it); here each disk costs a thread per queue (up to 4) and one more.
pub const MAX_VBDS: usize = 16;
/// Nics per domain (each costs three threads and a tap).
pub const MAX_VIFS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Open(#[from] pvdev::PvDevError),
    #[error("{0}")]
    Backend(String),
}

struct Vbd {
    disk: OpenDisk,
    devid: u32,
    paths: DevicePaths,
    /// Stops the backend's threads when dropped (a `VbdHandle`, or a
    /// `VhostBlkHandle` for a vhost-user disk).
    _backend: Box<dyn std::any::Any + Send>,
    detaching: bool,
}

struct Vif {
    devid: u32,
    mac: [u8; 6],
    bridge: Option<String>,
    paths: DevicePaths,
    /// Stops the backend and closes the tap when dropped.
    backend: VifHandle,
    detaching: bool,
}

/// The devices of a running boot. Shared between the monitor's API
/// threads (`Arc<Mutex<_>>`); the owner stops them all at the boot's end.
pub struct DeviceSet {
    ctx: BackendCtx,
    domid: u32,
    name: String,
    vcpus: u32,
    vbds: Vec<Vbd>,
    vifs: Vec<Vif>,
    /// The boot ended: nothing is attached any more.
    stopped: bool,
}

pub type SharedDevices = Arc<Mutex<DeviceSet>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn paths(domid: u32, kind: &str, devid: u32) -> DevicePaths {
    DevicePaths {
        frontend: format!("/local/domain/{domid}/device/{kind}/{devid}"),
        backend: format!("/local/domain/0/backend/{kind}/{domid}/{devid}"),
    }
}

/// A frontend number key; -1 when absent or not a number (as libxl).
fn fe_num(store: &mut Store, fe: &str, key: &str) -> i64 {
    store
        .read_string(&format!("{fe}/{key}"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

impl DeviceSet {
    pub fn new(ctx: BackendCtx, domid: u32, name: &str, vcpus: u32) -> DeviceSet {
        DeviceSet {
            ctx,
            domid,
            name: name.to_string(),
            vcpus,
            vbds: Vec::new(),
            vifs: Vec::new(),
            stopped: false,
        }
    }

    fn check_room(&self, n: usize, max: usize, what: &str) -> Result<(), HotplugError> {
        if self.stopped {
            return Err(HotplugError::Conflict("the domain's boot has ended".into()));
        }
        if n >= max {
            return Err(HotplugError::Limit(format!(
                "the domain has {max} {what}, the most xenkvm serves"
            )));
        }
        Ok(())
    }

    /// Serve an opened disk (boot devices and attached ones).
    pub fn add_disk(&mut self, disk: OpenDisk) -> Result<u32, HotplugError> {
        if disk.is_vhost_user() {
            return self.add_vhost_user_disk(disk);
        }
        let handle = blkback::spawn(
            &self.ctx,
            self.domid,
            VbdConfig {
                vdev: disk.spec.vdev.clone(),
                image: disk.image.clone(),
                read_only: disk.spec.access == Access::Ro,
                cdrom: disk.spec.devtype == DevType::Cdrom,
                params: disk.path.display().to_string(),
                max_queues: self.vcpus.min(4),
                domain_name: self.name.clone(),
            },
        )
        .map_err(pvdev::PvDevError::from)?;
        let devid = handle.devid;
        self.vbds.push(Vbd {
            disk,
            devid,
            paths: paths(self.domid, "vbd", devid),
            _backend: Box::new(handle),
            detaching: false,
        });
        Ok(devid)
    }

    /// A disk served by a vhost-user backend: refused when the guest's
    /// memory is not shared (a domain booted without such a disk).
    fn add_vhost_user_disk(&mut self, disk: OpenDisk) -> Result<u32, HotplugError> {
        let handle = devices::vhost_user::spawn(
            &self.ctx,
            self.domid,
            devices::vhost_user::VhostBlkConfig {
                vdev: disk.spec.vdev.clone(),
                socket: disk.path.clone(),
                read_only: disk.spec.access == Access::Ro,
                domain_name: self.name.clone(),
                max_queues: self.vcpus.min(4) as u16,
            },
        )
        .map_err(|e| HotplugError::Backend(format!("{}: {e}", disk.spec.vdev)))?;
        let devid = handle.devid;
        self.vbds.push(Vbd {
            disk,
            devid,
            paths: paths(self.domid, "vbd", devid),
            _backend: Box::new(handle),
            detaching: false,
        });
        Ok(devid)
    }

    /// Serve a nic (boot devices and attached ones).
    pub fn add_vif(&mut self, v: &VifSpec) -> Result<(), HotplugError> {
        let cfg = VifConfig {
            devid: v.devid,
            mac: v.mac.clone(),
            bridge: v.bridge.clone(),
            ifname: v.vifname.clone(),
            mtu: v.mtu,
            script: v.script.clone(),
            domain_name: self.name.clone(),
            no_gso: false,
        };
        let h = match &v.vhost_user {
            Some(sock) => netback::spawn_vhost_user(&self.ctx, self.domid, cfg, Path::new(sock)),
            None => netback::spawn(&self.ctx, self.domid, cfg),
        }
        .map_err(pvdev::PvDevError::from)?;
        log::info!("vif {}: host interface {}", v.devid, h.ifname());
        self.vifs.push(Vif {
            devid: v.devid,
            mac: h.mac(),
            bridge: v.bridge.clone(),
            paths: paths(self.domid, "vif", v.devid),
            backend: h,
            detaching: false,
        });
        Ok(())
    }

    /// `xl block-attach`: check the spec against the disks there are,
    /// open the image and serve it.
    pub fn attach_disk(&mut self, text: &str) -> Result<DiskInfo, HotplugError> {
        self.check_room(self.vbds.len(), MAX_VBDS, "disks")?;
        let (spec, _) = DiskSpec::parse(text).map_err(HotplugError::Spec)?;
        let devid = blkback::vdev::devid(&spec.vdev).ok_or_else(|| {
            HotplugError::Spec(format!("{:?} is not a Xen virtual device name", spec.vdev))
        })?;
        if let Some(o) = self.vbds.iter().find(|o| o.devid == devid) {
            return Err(HotplugError::Conflict(format!(
                "{} (devid {devid}) is already used by {}",
                spec.vdev,
                o.disk.path.display()
            )));
        }
        if spec.backendtype == Some(api::xlcfg::BackendType::VhostUser)
            && self.ctx.shared_ram.is_none()
        {
            return Err(HotplugError::Conflict(
                "a vhost-user disk needs the guest's memory shared with its backend, which it \
                 is only when the domain boots with a vhost-user disk"
                    .into(),
            ));
        }
        let disk = pvdev::open_disk(text)?;
        let writable = disk.spec.access != Access::Ro;
        if let Some(o) = self.vbds.iter().find(|o| {
            same_file(&o.disk.path, &disk.path) && (writable || o.disk.spec.access != Access::Ro)
        }) {
            return Err(HotplugError::Conflict(format!(
                "{} is already the domain's {}; a disk shared with a writer is refused",
                disk.path.display(),
                o.disk.spec.vdev
            )));
        }
        let devid = self.add_disk(disk)?;
        log::info!("block-attach: devid {devid} ({text})");
        self.disks()
            .into_iter()
            .find(|d| d.devid == devid)
            .ok_or_else(|| HotplugError::Backend("the disk vanished".into()))
    }

    /// `xl network-attach`: the next devid after the highest (as libxl),
    /// unless the spec names one; devid, MAC and tap name must be free.
    pub fn attach_vif(&mut self, text: &str) -> Result<NicInfo, HotplugError> {
        self.check_room(self.vifs.len(), MAX_VIFS, "nics")?;
        let next = self
            .vifs
            .iter()
            .map(|v| v.devid.saturating_add(1))
            .max()
            .unwrap_or(0);
        let (spec, _) = VifSpec::parse(text, next).map_err(HotplugError::Spec)?;
        if spec.backend.is_some() {
            return Err(HotplugError::Spec(
                "driver domains (backend=) are not supported".into(),
            ));
        }
        if self.vifs.iter().any(|v| v.devid == spec.devid) {
            return Err(HotplugError::Conflict(format!(
                "nic {} already exists",
                spec.devid
            )));
        }
        let guest_mac = match &spec.mac {
            Some(m) => mac::parse(m)
                .ok_or_else(|| HotplugError::Spec(format!("invalid MAC address {m}")))?,
            None => mac::generate(&self.name, spec.devid),
        };
        if let Some(v) = self.vifs.iter().find(|v| v.mac == guest_mac) {
            return Err(HotplugError::Conflict(format!(
                "MAC {} is already nic {}'s",
                mac::format(&guest_mac),
                v.devid
            )));
        }
        if let Some(name) = &spec.vifname {
            if let Some(v) = self
                .vifs
                .iter()
                .find(|v| v.backend.ifname() == name.as_str())
            {
                return Err(HotplugError::Conflict(format!(
                    "vifname {name} is already nic {}'s",
                    v.devid
                )));
            }
        }
        let devid = spec.devid;
        self.add_vif(&spec)?;
        log::info!("network-attach: devid {devid} ({text})");
        self.nics()
            .into_iter()
            .find(|n| n.devid == devid)
            .ok_or_else(|| HotplugError::Backend("the nic vanished".into()))
    }

    /// `xl block-list`.
    pub fn disks(&self) -> Vec<DiskInfo> {
        let mut s = lock(&self.ctx.store);
        self.vbds
            .iter()
            .map(|v| {
                let fe = &v.paths.frontend;
                DiskInfo {
                    vdev: v.disk.spec.vdev.clone(),
                    devid: v.devid,
                    backend_id: 0,
                    frontend_id: self.domid,
                    state: fe_num(&mut s, fe, "state"),
                    evtch: fe_num(&mut s, fe, "event-channel"),
                    ring_ref: fe_num(&mut s, fe, "ring-ref"),
                    backend: v.paths.backend.clone(),
                    frontend: fe.clone(),
                    target: v.disk.path.display().to_string(),
                    read_only: v.disk.spec.access == Access::Ro,
                }
            })
            .collect()
    }

    /// `xl network-list`.
    pub fn nics(&self) -> Vec<NicInfo> {
        let mut s = lock(&self.ctx.store);
        self.vifs
            .iter()
            .map(|v| {
                let fe = &v.paths.frontend;
                NicInfo {
                    devid: v.devid,
                    backend_id: 0,
                    frontend_id: self.domid,
                    mac: mac::format(&v.mac),
                    state: fe_num(&mut s, fe, "state"),
                    evtch: fe_num(&mut s, fe, "event-channel"),
                    tx_ring_ref: fe_num(&mut s, fe, "tx-ring-ref"),
                    rx_ring_ref: fe_num(&mut s, fe, "rx-ring-ref"),
                    backend: v.paths.backend.clone(),
                    frontend: fe.clone(),
                    ifname: v.backend.ifname().to_string(),
                    bridge: v.bridge.clone(),
                }
            })
            .collect()
    }

    /// Stop every backend and release every image and tap (the boot ends).
    pub fn stop_all(&mut self) {
        self.stopped = true;
        self.vbds.clear();
        self.vifs.clear();
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

/// Start the config's devices for a boot.
pub fn boot_devices(
    ctx: BackendCtx,
    cfg: &crate::vm::VmConfig,
) -> Result<DeviceOwner, HotplugError> {
    let mut set = DeviceSet::new(ctx, u32::from(cfg.domid), cfg.name, cfg.vcpus);
    for d in cfg.disks {
        set.add_disk(d.clone())?;
    }
    for v in cfg.vifs {
        set.add_vif(v)?;
    }
    Ok(DeviceOwner(Arc::new(Mutex::new(set))))
}

/// The boot's devices; dropping it (when the boot ends) stops them.
pub struct DeviceOwner(pub SharedDevices);

impl Drop for DeviceOwner {
    fn drop(&mut self) {
        lock(&self.0).stop_all();
    }
}

#[cfg(test)]
mod tests;
