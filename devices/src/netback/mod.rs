//! The PV network backend (vif): xen-netfront's peer, in the monitor.
//!
//! [`spawn`] creates the device's xenstore directories (as libxl does),
//! opens the host's tap device and starts a thread that runs the xenbus
//! handshake. Once the frontend connects, one thread moves guest transmits
//! (tx ring) to the tap and another moves tap frames into the guest's
//! posted receive buffers (rx ring). Checksum and TCP segmentation offloads
//! pass between netif's flags and the tap's virtio-net header.

mod backend;
pub mod csum;
pub mod mac;
pub mod proto;
pub mod rx;
pub mod tap;
pub mod tx;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::xenbus::{BackendCtx, State, XenbusDev, XenbusError};
use tap::{Link, Tap};

/// The MAC of the host end of every vif (as Xen's netback sets it).
pub const HOST_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// One nic, from xl's vif spec (`mac=`, `bridge=`, `vifname=`, `mtu=`,
/// `script=`).
#[derive(Debug, Clone, Default)]
pub struct VifConfig {
    pub devid: u32,
    /// `aa:bb:cc:dd:ee:ff`; None: generated from `domain_name` and `devid`.
    pub mac: Option<String>,
    /// A bridge to add the tap to.
    pub bridge: Option<String>,
    /// The tap's name; default `vif<domid>.<devid>`. An existing
    /// (persistent) tap of that name is used as it is.
    pub ifname: Option<String>,
    pub mtu: Option<u32>,
    /// Recorded in xenstore; xenkvm sets the tap up itself and runs no
    /// hotplug script.
    pub script: Option<String>,
    pub domain_name: String,
    /// Offer the frontend no GSO (a host end that cannot take it).
    pub no_gso: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetbackError {
    #[error("vif {0}: invalid MAC address `{1}`")]
    BadMac(u32, String),
    #[error("vif {devid}: tap `{name}`: {err}")]
    Tap {
        devid: u32,
        name: String,
        err: std::io::Error,
    },
    #[error("vif {devid}: cannot add `{name}` to bridge `{bridge}`: {err}")]
    Bridge {
        devid: u32,
        name: String,
        bridge: String,
        err: std::io::Error,
    },
    #[error("vif {0}: xenstore: {1:?}")]
    Store(u32, xen_shim::xenstore::XsError),
    #[error(transparent)]
    Xenbus(#[from] XenbusError),
    #[error("vif {0}: cannot start its thread: {1}")]
    Thread(u32, std::io::Error),
    #[error("vif {0}: vhost-user backend {1}: {2}")]
    VhostUser(u32, String, crate::vhost_user::VhostError),
}

/// A running vif; dropping it stops the backend and closes the tap.
pub struct VifHandle {
    devid: u32,
    ifname: String,
    mac: [u8; 6],
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VifHandle {
    pub fn devid(&self) -> u32 {
        self.devid
    }
    /// The host-side interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    /// The guest's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
    /// Stop serving: the frontend sees the backend Closed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VifHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Create vif `cfg.devid` of domain `domid`: its xenstore entries, its tap
/// (up, and in `cfg.bridge` if named), and the backend thread.
pub fn spawn(ctx: &BackendCtx, domid: u32, cfg: VifConfig) -> Result<VifHandle, NetbackError> {
    let mac = guest_mac(&cfg)?;
    let name = cfg
        .ifname
        .clone()
        .unwrap_or_else(|| tap::default_name(domid, cfg.devid));
    let devid = cfg.devid;
    let tap_err = |err| NetbackError::Tap {
        devid,
        name: name.clone(),
        err,
    };
    let tap = Tap::open(&name).map_err(tap_err)?;
    let name = tap.name().to_string();
    if let Err(e) = tap.set_mac(HOST_MAC) {
        log::debug!("{name}: cannot set the host MAC: {e}");
    }
    if let Some(mtu) = cfg.mtu {
        tap.set_mtu(mtu).map_err(|err| NetbackError::Tap {
            devid,
            name: name.clone(),
            err,
        })?;
    }
    tap.up().map_err(|err| NetbackError::Tap {
        devid,
        name: name.clone(),
        err,
    })?;
    if let Some(br) = &cfg.bridge {
        tap.attach(br).map_err(|err| NetbackError::Bridge {
            devid,
            name: name.clone(),
            bridge: br.clone(),
            err,
        })?;
    }
    if let Some(s) = &cfg.script {
        log::info!("vif {devid}: hotplug script `{s}` not run: xenkvm sets up {name} itself");
    }
    log::info!(
        "vif {devid}: guest MAC {} on {name}{}",
        mac::format(&mac),
        cfg.bridge
            .as_deref()
            .map(|b| format!(" (bridge {b})"))
            .unwrap_or_default()
    );
    spawn_with_link(ctx, domid, &cfg, mac, name, Arc::new(tap))
}

/// Create vif `cfg.devid` whose host end is the vhost-user-net backend
/// listening on `socket` (no tap; `bridge=` does not apply).
pub fn spawn_vhost_user(
    ctx: &BackendCtx,
    domid: u32,
    cfg: VifConfig,
    socket: &std::path::Path,
) -> Result<VifHandle, NetbackError> {
    let mac = guest_mac(&cfg)?;
    let link = crate::vhost_user::net::VhostNetLink::connect(socket)
        .map_err(|e| NetbackError::VhostUser(cfg.devid, socket.display().to_string(), e))?;
    let cfg = VifConfig {
        no_gso: true,
        bridge: None,
        ..cfg
    };
    log::info!(
        "vif {}: guest MAC {} on vhost-user backend {}",
        cfg.devid,
        mac::format(&mac),
        socket.display()
    );
    let name = format!("vhost-user:{}", socket.display());
    spawn_with_link(ctx, domid, &cfg, mac, name, Arc::new(link))
}

fn guest_mac(cfg: &VifConfig) -> Result<[u8; 6], NetbackError> {
    match &cfg.mac {
        Some(s) => mac::parse(s).ok_or_else(|| NetbackError::BadMac(cfg.devid, s.clone())),
        None => Ok(mac::generate(&cfg.domain_name, cfg.devid)),
    }
}

/// [`spawn`] on any [`Link`] (tests use an in-memory one).
pub(crate) fn spawn_with_link(
    ctx: &BackendCtx,
    domid: u32,
    cfg: &VifConfig,
    mac: [u8; 6],
    ifname: String,
    link: Arc<dyn Link>,
) -> Result<VifHandle, NetbackError> {
    let devid = cfg.devid;
    let mac_s = mac::format(&mac);
    let handle = devid.to_string();
    let mtu = cfg.mtu.map(|m| m.to_string());
    let mut front: Vec<(&str, &str)> = vec![("handle", &handle), ("mac", &mac_s)];
    let mut back: Vec<(&str, &str)> = vec![
        ("handle", &handle),
        ("mac", &mac_s),
        ("type", "vif"),
        ("vifname", &ifname),
        ("hotplug-status", ""),
    ];
    if let Some(m) = &mtu {
        front.push(("mtu", m));
        back.push(("mtu", m));
    }
    if let Some(b) = &cfg.bridge {
        back.push(("bridge", b));
    }
    if let Some(s) = &cfg.script {
        back.push(("script", s));
    }
    let paths = {
        let mut store = ctx.store.lock().unwrap_or_else(|e| e.into_inner());
        xen_shim::xenstore::add_device(&mut store, domid, 0, "vif", devid, &front, &back)
            .map_err(|e| NetbackError::Store(devid, e))?
    };
    let dev = XenbusDev::new(ctx.store.clone(), paths)?;
    let one = || "1".to_string();
    let gso = || if cfg.no_gso { "0" } else { "1" }.to_string();
    dev.write_be(&[
        ("feature-sg", one()),
        ("feature-gso-tcpv4", gso()),
        ("feature-gso-tcpv6", gso()),
        ("feature-ipv6-csum-offload", one()),
        ("feature-rx-copy", one()),
        ("feature-rx-flip", "0".into()),
        // One event channel per direction is supported, but not offered: with
        // one channel, tx completions and received frames share upcalls
        // (each costs the guest several exits).
        ("feature-split-event-channels", "0".into()),
        ("hotplug-status", "connected".into()),
    ])?;
    dev.switch_state(State::InitWait)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ctx2 = ctx.clone();
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vif{domid}.{devid}"))
        .spawn(move || backend::run(ctx2, dev, link, stop2))
        .map_err(|e| NetbackError::Thread(devid, e))?;
    Ok(VifHandle {
        devid,
        ifname,
        mac,
        stop,
        thread: Some(thread),
    })
}
