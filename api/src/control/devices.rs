//! Device hotplug in the control API: the request and answer types of
//! `/v1/domains/{dom}/disks` and `/v1/domains/{dom}/nics` (`xl
//! block-attach`/`block-detach`/`block-list`, `network-attach`/
//! `network-detach`/`network-list`), the client calls, and xl's tables.

use serde::{Deserialize, Serialize};

use super::client::{segment, Client, ClientError};

/// `POST /v1/domains/{dom}/disks` and `/nics`: an xl disk or vif spec, as
/// in xl.cfg's `disk = [...]` / `vif = [...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub spec: String,
}

/// `POST /v1/domains/{dom}/disks/{id}/detach` (and `nics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    /// Remove the device even if the guest does not release it.
    #[serde(default)]
    pub force: bool,
    /// How long to wait for the guest, in seconds (default 10; 1 to 300).
    #[serde(default)]
    pub timeout_s: Option<u32>,
}

/// Default wait for the guest to release a device (libxl's
/// LIBXL_DESTROY_TIMEOUT).
pub const DETACH_TIMEOUT_S: u32 = 10;
/// Longest wait a detach request may ask for.
pub const MAX_DETACH_TIMEOUT_S: u32 = 300;

impl DetachRequest {
    pub fn timeout(&self) -> std::time::Duration {
        let s = self
            .timeout_s
            .unwrap_or(DETACH_TIMEOUT_S)
            .clamp(1, MAX_DETACH_TIMEOUT_S);
        std::time::Duration::from_secs(u64::from(s))
    }
}

/// One PV disk of a domain (`xl block-list`). Numbers the frontend has
/// not written (yet) are -1, as in libxl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// The guest's name for it (`xvdb`).
    pub vdev: String,
    /// Its xenstore id (`xvdb` is 51728).
    pub devid: u32,
    pub backend_id: u32,
    pub frontend_id: u32,
    /// The frontend's xenbus state (4 connected, 6 closed).
    pub state: i64,
    pub evtch: i64,
    pub ring_ref: i64,
    pub backend: String,
    pub frontend: String,
    /// The image on the host.
    pub target: String,
    pub read_only: bool,
}

/// One PV nic of a domain (`xl network-list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    pub devid: u32,
    pub backend_id: u32,
    pub frontend_id: u32,
    pub mac: String,
    /// The frontend's xenbus state.
    pub state: i64,
    pub evtch: i64,
    pub tx_ring_ref: i64,
    pub rx_ring_ref: i64,
    pub backend: String,
    pub frontend: String,
    /// The host's tap device.
    pub ifname: String,
    pub bridge: Option<String>,
}

/// `xl block-list`'s header.
pub fn block_list_header() -> String {
    format!(
        "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}",
        "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"
    )
}

/// One `xl block-list` row (`%-5d %-3d %-6d %-5d %-6d %-8d %-30s`; handle
/// is the frontend's domain id, as libxl reports it).
pub fn block_list_row(d: &DiskInfo) -> String {
    format!(
        "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}",
        d.devid, d.backend_id, d.frontend_id, d.state, d.evtch, d.ring_ref, d.backend
    )
}

/// `xl network-list`'s header.
pub fn network_list_header() -> String {
    format!(
        "{:<3} {:<2} {:<17} {:<6} {:<5} {:<6} {:>5}/{:<5} {:<30}",
        "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path"
    )
}

/// One `xl network-list` row (`%-3d %-2d ` MAC `%6d %5d %6d %5d/%-11d %-30s`).
pub fn network_list_row(n: &NicInfo) -> String {
    format!(
        "{:<3} {:<2} {}{:>6} {:>5} {:>6} {:>5}/{:<11} {:<30}",
        n.devid,
        n.backend_id,
        n.mac,
        n.devid,
        n.state,
        n.evtch,
        n.tx_ring_ref,
        n.rx_ring_ref,
        n.backend
    )
}

fn body<T: Serialize>(c: &Client, v: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(v).map_err(|e| ClientError::Decode {
        path: c.path(),
        msg: e.to_string(),
    })
}

/// `disks` or `nics`.
fn kind_path(dom: &str, kind: &str) -> String {
    format!("/v1/domains/{}/{kind}", segment(dom))
}

impl Client {
    pub fn disks(&self, dom: &str) -> Result<Vec<DiskInfo>, ClientError> {
        self.call("GET", &kind_path(dom, "disks"), None)
    }

    pub fn disk_attach(&self, dom: &str, spec: &str) -> Result<DiskInfo, ClientError> {
        let b = body(
            self,
            &AttachRequest {
                spec: spec.to_string(),
            },
        )?;
        self.call("POST", &kind_path(dom, "disks"), Some(&b))
    }

    /// `id`: a vdev (`xvdb`) or a devid (`51728`).
    pub fn disk_detach(&self, dom: &str, id: &str, req: &DetachRequest) -> Result<(), ClientError> {
        let b = body(self, req)?;
        let path = format!("{}/{}/detach", kind_path(dom, "disks"), segment(id));
        self.call::<serde_json::Value>("POST", &path, Some(&b))
            .map(|_| ())
    }

    pub fn nics(&self, dom: &str) -> Result<Vec<NicInfo>, ClientError> {
        self.call("GET", &kind_path(dom, "nics"), None)
    }

    pub fn nic_attach(&self, dom: &str, spec: &str) -> Result<NicInfo, ClientError> {
        let b = body(
            self,
            &AttachRequest {
                spec: spec.to_string(),
            },
        )?;
        self.call("POST", &kind_path(dom, "nics"), Some(&b))
    }

    /// `id`: a devid (`1`) or the guest's MAC (`00:16:3e:..`).
    pub fn nic_detach(&self, dom: &str, id: &str, req: &DetachRequest) -> Result<(), ClientError> {
        let b = body(self, req)?;
        let path = format!("{}/{}/detach", kind_path(dom, "nics"), segment(id));
        self.call::<serde_json::Value>("POST", &path, Some(&b))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_follow_xl() {
        assert_eq!(
            block_list_header(),
            "Vdev  BE  handle state evt-ch ring-ref BE-path                       "
        );
        let d = DiskInfo {
            vdev: "xvdb".into(),
            devid: 51728,
            backend_id: 0,
            frontend_id: 3,
            state: 4,
            evtch: 9,
            ring_ref: 8,
            backend: "/local/domain/0/backend/vbd/3/51728".into(),
            frontend: "/local/domain/3/device/vbd/51728".into(),
            target: "/srv/d.img".into(),
            read_only: false,
        };
        assert_eq!(
            block_list_row(&d),
            "51728 0   3      4     9      8        /local/domain/0/backend/vbd/3/51728"
        );
        assert_eq!(
            network_list_header(),
            "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                       "
        );
        let n = NicInfo {
            devid: 1,
            backend_id: 0,
            frontend_id: 3,
            mac: "00:16:3e:01:02:03".into(),
            state: 4,
            evtch: 10,
            tx_ring_ref: 768,
            rx_ring_ref: 769,
            backend: "/local/domain/0/backend/vif/3/1".into(),
            frontend: "/local/domain/3/device/vif/1".into(),
            ifname: "vif3.1".into(),
            bridge: None,
        };
        assert_eq!(
            network_list_row(&n),
            "1   0  00:16:3e:01:02:03     1     4     10   768/769         /local/domain/0/backend/vif/3/1"
        );
    }

    #[test]
    fn detach_timeouts_are_bounded() {
        assert_eq!(DetachRequest::default().timeout().as_secs(), 10);
        let r = DetachRequest {
            force: false,
            timeout_s: Some(100_000),
        };
        assert_eq!(r.timeout().as_secs(), 300);
        let r = DetachRequest {
            force: false,
            timeout_s: Some(0),
        };
        assert_eq!(r.timeout().as_secs(), 1);
    }
}
