//! Removing a device the way libxl does: the backend to Closing
//! (`online` 0), a wait for the guest's frontend to close, then the
//! backend stopped and both xenstore directories removed.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use devices::blkback;
use devices::netback::mac;
use xen_shim::xenstore::{DevicePaths, Store};

use super::{fe_num, lock, HotplugError, SharedDevices};

/// Which device a detach names.
enum Which<'a> {
    Disk(&'a str),
    Nic(&'a str),
}

/// `xl block-detach DOM VDEV|DEVID [-f]`.
pub fn detach_disk(
    set: &SharedDevices,
    id: &str,
    force: bool,
    timeout: Duration,
) -> Result<u32, HotplugError> {
    detach(set, Which::Disk(id), force, timeout)
}

/// `xl network-detach DOM DEVID|MAC [-f]`.
pub fn detach_nic(
    set: &SharedDevices,
    id: &str,
    force: bool,
    timeout: Duration,
) -> Result<u32, HotplugError> {
    detach(set, Which::Nic(id), force, timeout)
}

/// The frontend let the device go: closed, never connected, or gone.
fn released(state: i64) -> bool {
    matches!(state, -1 | 0 | 1 | 6)
}

/// Returns the devid of the device removed.
fn detach(
    set: &SharedDevices,
    which: Which,
    force: bool,
    timeout: Duration,
) -> Result<u32, HotplugError> {
    let (store, p, label) = {
        let mut s = lock(set);
        let (p, label, flag) = match which {
            Which::Disk(id) => {
                let n = id.parse::<u32>().ok().or_else(|| blkback::vdev::devid(id));
                let v = s
                    .vbds
                    .iter_mut()
                    .find(|v| Some(v.devid) == n)
                    .ok_or_else(|| {
                        HotplugError::NotFound(format!("Error: Device {id} not connected."))
                    })?;
                (v.paths.clone(), v.disk.spec.vdev.clone(), &mut v.detaching)
            }
            Which::Nic(id) => {
                let m = mac::parse(id);
                let n = id.parse::<u32>().ok();
                let v = s
                    .vifs
                    .iter_mut()
                    .find(|v| Some(v.devid) == n || Some(v.mac) == m)
                    .ok_or_else(|| HotplugError::NotFound(format!("Unknown device {id}.")))?;
                (
                    v.paths.clone(),
                    format!("nic {}", v.devid),
                    &mut v.detaching,
                )
            }
        };
        if *flag {
            return Err(HotplugError::Conflict(format!(
                "{label} is being detached already"
            )));
        }
        *flag = true;
        (s.ctx.store.clone(), p, label)
    };
    let fe_state = |st: &Mutex<Store>| fe_num(&mut lock(st), &p.frontend, "state");
    let start = Instant::now();
    let mut state = fe_state(&store);
    if !force && !released(state) {
        let _ = lock(&store).write(&format!("{}/online", p.backend), "0");
    }
    while !released(state) && !force {
        {
            // Closing, again if the backend thread wrote over it.
            let mut s = lock(&store);
            let be = fe_num(&mut s, &p.backend, "state");
            if be != 5 && be != 6 {
                let _ = s.write(&format!("{}/state", p.backend), "5");
            }
        }
        if start.elapsed() >= timeout {
            clear_flag(set, &p);
            return Err(HotplugError::Timeout(format!(
                "{label}: the guest did not release the device within {} s (its frontend is in \
                 state {state}{}); it stays attached, its backend Closing, until the guest lets \
                 it go; a forced detach (-f) removes it now",
                timeout.as_secs(),
                if state == 5 {
                    ", Closing: in use, e.g. mounted"
                } else {
                    ""
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
        state = fe_state(&store);
    }
    // Stop the backend (and close the image or tap) before the directories
    // go: its thread writes its last state on the way out.
    let (vbd, vif) = {
        let mut s = lock(set);
        let vbd = s
            .vbds
            .iter()
            .position(|v| v.paths == p)
            .map(|i| s.vbds.remove(i));
        let vif = s
            .vifs
            .iter()
            .position(|v| v.paths == p)
            .map(|i| s.vifs.remove(i));
        (vbd, vif)
    };
    let Some(devid) = vbd
        .as_ref()
        .map(|v| v.devid)
        .or(vif.as_ref().map(|v| v.devid))
    else {
        return Err(HotplugError::Conflict(format!(
            "{label}: the domain's devices were stopped meanwhile (reboot or shutdown)"
        )));
    };
    drop(vbd);
    drop(vif);
    let mut s = lock(&store);
    remove_with_empty_parents(&mut s, &p);
    log::info!(
        "detached {label}{}",
        if force && !released(state) {
            " (forced)"
        } else {
            ""
        }
    );
    Ok(devid)
}

fn clear_flag(set: &SharedDevices, p: &DevicePaths) {
    let mut s = lock(set);
    for v in s.vbds.iter_mut().filter(|v| v.paths == *p) {
        v.detaching = false;
    }
    for v in s.vifs.iter_mut().filter(|v| v.paths == *p) {
        v.detaching = false;
    }
}

/// Remove both directories, then `device/<kind>` and
/// `backend/<kind>/<domid>` (and `backend/<kind>`) once empty, as libxl's
/// path cleanup does (`device` stays: the guest watches it).
pub(super) fn remove_with_empty_parents(s: &mut Store, p: &DevicePaths) {
    for (path, keep) in [(&p.frontend, 1usize), (&p.backend, 2)] {
        if let Err(e) = s.rm(path) {
            log::warn!("xenstore rm {path}: {e:?}");
        }
        let mut dir = PathBuf::from(path.as_str());
        for _ in 0..keep {
            if !dir.pop() {
                break;
            }
            let d = dir.display().to_string();
            if s.directory(&d).is_ok_and(|c| c.is_empty()) {
                let _ = s.rm(&d);
            } else {
                break;
            }
        }
    }
}
