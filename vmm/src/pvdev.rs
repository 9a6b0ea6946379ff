//! The guest's PV disks and nics: xl's device specs checked and opened
//! (`crate::hotplug` runs their backends).

use std::path::PathBuf;
use std::sync::Arc;

use api::xlcfg::{Access, BackendType, DiskFormat, DiskSpec, VifSpec};
use devices::blkback;
use devices::disk::{self, DiskImage, Format};

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

/// A disk opened for the guest (the config's are kept across reboots).
#[derive(Clone)]
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

pub fn open_disk(text: &str) -> Result<OpenDisk, PvDevError> {
    let err = |why: String| PvDevError::DiskSpec {
        spec: text.to_string(),
        why,
    };
    let (spec, notes) = DiskSpec::parse(text).map_err(err)?;
    for n in notes {
        log::info!("disk {text:?}: {n}");
    }
    if spec.backendtype == Some(BackendType::VhostUser) {
        return open_vhost_user(spec, err);
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

/// `backendtype=vhost-user`: `target=` is the backend's unix socket; the
/// backend owns the image (its format and path are its business).
fn open_vhost_user(
    spec: DiskSpec,
    err: impl Fn(String) -> PvDevError,
) -> Result<OpenDisk, PvDevError> {
    use std::os::unix::fs::FileTypeExt;
    if spec.format != DiskFormat::Raw {
        return Err(err(
            "format= does not apply to a vhost-user disk (the backend reads the image)".into(),
        ));
    }
    if spec.devtype == api::xlcfg::DevType::Cdrom {
        return Err(err("a vhost-user disk cannot be a cdrom".into()));
    }
    let Some(target) = spec.target.clone().filter(|t| !t.is_empty()) else {
        return Err(err("a vhost-user disk needs target=SOCKET".into()));
    };
    let path = PathBuf::from(&target);
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => return Err(err(format!("{target} is not a unix socket"))),
        Err(e) => return Err(err(format!("{target}: {e}"))),
    }
    let disk = devices::vhost_user::image::SocketDisk::open(path.clone())
        .map_err(|e| err(format!("{target}: {e}")))?;
    let image: Arc<dyn DiskImage> = Arc::new(disk);
    Ok(OpenDisk { spec, path, image })
}

impl OpenDisk {
    /// Served by a vhost-user backend rather than from an image.
    pub fn is_vhost_user(&self) -> bool {
        self.spec.backendtype == Some(BackendType::VhostUser)
    }
}
