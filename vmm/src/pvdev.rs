//! The guest's PV disks and nics: xl's device specs turned into running
//! backends from the `devices` crate.

use std::path::PathBuf;
use std::sync::Arc;

use api::xlcfg::{Access, DevType, DiskFormat, DiskSpec, VifSpec};
use devices::blkback::{self, VbdConfig, VbdHandle};
use devices::disk::{self, DiskImage, Format};
use devices::xenbus::BackendCtx;

#[derive(Debug, thiserror::Error)]
pub enum PvDevError {
    #[error("--disk {spec:?}: {why}")]
    DiskSpec { spec: String, why: String },
    #[error(transparent)]
    Disk(#[from] devices::disk::DiskError),
    #[error(transparent)]
    Vbd(#[from] blkback::VbdError),
    #[error("--net {spec:?}: {why}")]
    NetSpec { spec: String, why: String },
    #[error(transparent)]
    Vif(#[from] devices::netback::NetbackError),
}

/// Parse the nics given as xl vif specs (the list index is the devid
/// unless `devid=` says otherwise).
pub fn parse_vifs(specs: &[String]) -> Result<Vec<VifSpec>, PvDevError> {
    let mut out: Vec<VifSpec> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let (v, notes) = VifSpec::parse(s, i as u32).map_err(|why| PvDevError::NetSpec {
            spec: s.clone(),
            why,
        })?;
        for n in notes {
            log::info!("vif {s:?}: {n}");
        }
        if out.iter().any(|o| o.devid == v.devid) {
            return Err(PvDevError::NetSpec {
                spec: s.clone(),
                why: format!("devid {} is used twice", v.devid),
            });
        }
        out.push(v);
    }
    Ok(out)
}

/// A disk opened for the guest (kept across reboots).
pub struct OpenDisk {
    pub spec: DiskSpec,
    pub path: PathBuf,
    pub image: Arc<dyn DiskImage>,
}

/// Parse and open the disks given as xl disk specs.
pub fn open_disks(specs: &[String]) -> Result<Vec<OpenDisk>, PvDevError> {
    let mut out: Vec<OpenDisk> = Vec::new();
    for s in specs {
        let d = open_disk(s)?;
        let id = blkback::vdev::devid(&d.spec.vdev);
        if out.iter().any(|o| blkback::vdev::devid(&o.spec.vdev) == id) {
            return Err(PvDevError::DiskSpec {
                spec: s.clone(),
                why: format!("{} is already used by another disk", d.spec.vdev),
            });
        }
        out.push(d);
    }
    Ok(out)
}

fn open_disk(text: &str) -> Result<OpenDisk, PvDevError> {
    let err = |why: String| PvDevError::DiskSpec {
        spec: text.to_string(),
        why,
    };
    let (spec, notes) = DiskSpec::parse(text).map_err(err)?;
    for n in notes {
        log::info!("disk {text:?}: {n}");
    }
    let format = match spec.format {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
        other => {
            return Err(err(format!(
                "format {other:?} is not supported (raw, qcow2)"
            )))
        }
    };
    if spec.backend.is_some() || spec.script.is_some() {
        return Err(err(
            "driver domains and hotplug scripts are not supported".into()
        ));
    }
    let Some(target) = spec.target.clone().filter(|t| !t.is_empty()) else {
        return Err(err("empty drives are not supported".into()));
    };
    let path = PathBuf::from(&target);
    let read_only = spec.access == Access::Ro;
    let image: Arc<dyn DiskImage> = disk::open(&path, format, read_only)?.into();
    Ok(OpenDisk { spec, path, image })
}

/// Running backends; stopped when dropped.
#[derive(Default)]
pub struct Devices {
    pub vbds: Vec<VbdHandle>,
    pub vifs: Vec<devices::netback::VifHandle>,
}

/// Create the guest's devices in xenstore and start their backends.
pub fn start(
    ctx: &BackendCtx,
    domid: u32,
    name: &str,
    vcpus: u32,
    disks: &[OpenDisk],
    vifs: &[VifSpec],
) -> Result<Devices, PvDevError> {
    let mut devs = Devices::default();
    for d in disks {
        devs.vbds.push(blkback::spawn(
            ctx,
            domid,
            VbdConfig {
                vdev: d.spec.vdev.clone(),
                image: d.image.clone(),
                read_only: d.spec.access == Access::Ro,
                cdrom: d.spec.devtype == DevType::Cdrom,
                params: d.path.display().to_string(),
                max_queues: vcpus.min(4),
                domain_name: name.to_string(),
            },
        )?);
    }
    for v in vifs {
        let h = devices::netback::spawn(
            ctx,
            domid,
            devices::netback::VifConfig {
                devid: v.devid,
                mac: v.mac.clone(),
                bridge: v.bridge.clone(),
                ifname: v.vifname.clone(),
                mtu: v.mtu,
                script: v.script.clone(),
                domain_name: name.to_string(),
            },
        )?;
        log::info!("vif {}: host interface {}", v.devid, h.ifname());
        devs.vifs.push(h);
    }
    Ok(devs)
}
