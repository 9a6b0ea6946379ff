//! What hotplug changed, so that the domain's next boot has the same
//! devices (libxl records attached devices in the domain's config too).

use super::{lock, DeviceSet, HotplugError, SharedDevices};

/// The devices attached and the config's devices detached so far.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Disk specs attached (each names its vdev).
    disks: Vec<(u32, String)>,
    /// Vif specs attached, with their devid.
    vifs: Vec<(u32, String)>,
    /// Devids of the boot's disks and nics detached.
    gone_disks: Vec<u32>,
    gone_vifs: Vec<u32>,
}

/// One more than the devices a domain can have: the ledger stays bounded.
const MAX_ENTRIES: usize = 64;

fn forget(list: &mut Vec<(u32, String)>, gone: &mut Vec<u32>, devid: u32) {
    if let Some(i) = list.iter().position(|(d, _)| *d == devid) {
        list.remove(i);
    } else if !gone.contains(&devid) && gone.len() < MAX_ENTRIES {
        gone.push(devid);
    }
}

impl Ledger {
    pub fn disk_attached(&mut self, devid: u32, spec: &str) {
        if self.disks.len() < MAX_ENTRIES {
            self.disks.push((devid, spec.to_string()));
        }
    }

    /// `spec` gets `devid=` so that the nic keeps its devid (and MAC).
    pub fn vif_attached(&mut self, devid: u32, spec: &str) {
        if self.vifs.len() < MAX_ENTRIES {
            let spec = if spec.trim().is_empty() {
                format!("devid={devid}")
            } else {
                format!("{spec},devid={devid}")
            };
            self.vifs.push((devid, spec));
        }
    }

    pub fn disk_detached(&mut self, devid: u32) {
        forget(&mut self.disks, &mut self.gone_disks, devid);
    }

    pub fn vif_detached(&mut self, devid: u32) {
        forget(&mut self.vifs, &mut self.gone_vifs, devid);
    }

    /// Apply the changes to a new boot's devices before its guest runs
    /// (what cannot be done again, an image gone say, is logged).
    pub fn replay(&self, set: &SharedDevices) {
        let mut s = lock(set);
        let report = |what: &str, r: Result<(), HotplugError>| {
            if let Err(e) = r {
                log::warn!("hotplug: cannot {what} again after the reboot: {e}");
            }
        };
        for &devid in &self.gone_disks {
            report("detach a disk", s.remove_now(Some(devid), None));
        }
        for &devid in &self.gone_vifs {
            report("detach a nic", s.remove_now(None, Some(devid)));
        }
        for (_, spec) in &self.disks {
            report(&format!("attach {spec}"), s.attach_disk(spec).map(|_| ()));
        }
        for (_, spec) in &self.vifs {
            report(&format!("attach {spec}"), s.attach_vif(spec).map(|_| ()));
        }
    }
}

impl DeviceSet {
    /// Remove a device no guest uses yet (before the boot's guest runs).
    fn remove_now(&mut self, vbd: Option<u32>, vif: Option<u32>) -> Result<(), HotplugError> {
        let paths = if let Some(i) = self.vbds.iter().position(|v| Some(v.devid) == vbd) {
            self.vbds.remove(i).paths
        } else if let Some(i) = self.vifs.iter().position(|v| Some(v.devid) == vif) {
            self.vifs.remove(i).paths
        } else {
            return Err(HotplugError::NotFound("no such device".into()));
        };
        super::detach::remove_with_empty_parents(&mut lock(&self.ctx.store), &paths);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_then_detach_cancels_and_config_devices_are_remembered() {
        let mut l = Ledger::default();
        l.disk_attached(51728, "d.img,raw,xvdb,w");
        l.vif_attached(1, "bridge=br0");
        l.vif_attached(2, "");
        assert_eq!(l.vifs[0].1, "bridge=br0,devid=1");
        assert_eq!(l.vifs[1].1, "devid=2");
        l.disk_detached(51728);
        l.vif_detached(1);
        assert!(l.disks.is_empty());
        assert_eq!(l.vifs.len(), 1);
        // A config device detached, then one attached under its vdev: the
        // next boot removes the first and adds the second.
        l.disk_detached(51712);
        l.disk_detached(51712);
        assert_eq!(l.gone_disks, [51712]);
        l.disk_attached(51712, "e.img,raw,xvda,w");
        assert_eq!(l.gone_disks, [51712]);
        assert_eq!(l.disks.len(), 1);
        for i in 0..1000 {
            l.disk_detached(i);
        }
        assert_eq!(l.gone_disks.len(), MAX_ENTRIES);
    }
}
