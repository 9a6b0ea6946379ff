//! The control API: JSON over HTTP/1.1 on a unix socket per domain.
//!
//! Each domain's monitor process serves `api.sock` in its run directory
//! (`<run>/domains/<name>/api.sock`); `docs/openapi.yaml` describes the
//! endpoints. This module holds the request and response types, the error
//! body, the routing ([`server::route`], independent of any socket), the
//! bounded HTTP/1.1 server ([`server::serve`]) and a small blocking client
//! ([`client::Client`]) that the `xenkvm` verbs use.
//!
//! Routes (`{dom}` is the domain's name or numeric id):
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | `/v1/domains` | `[DomainInfo]` |
//! | POST | `/v1/domains` | [`CreateRequest`] → 201 [`DomainInfo`] |
//! | GET | `/v1/domains/{dom}` | [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/pause` | [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/resume` (alias `unpause`) | [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/shutdown` | 202 [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/reboot` | 202 [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/destroy` | 202 [`DomainInfo`] |
//! | GET | `/v1/domains/{dom}/console` | [`ConsoleInfo`] |
//! | GET | `/v1/domains/{dom}/vcpus` | `[VcpuInfo]` |
//! | POST | `/v1/domains/{dom}/vcpus` | [`VcpuSetRequest`] → [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/sysrq` | [`SysrqRequest`] → [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/memory` | [`MemoryRequest`] → [`DomainInfo`] |
//! | POST | `/v1/domains/{dom}/save` | [`SaveRequest`] → [`SaveInfo`] |
//! | POST | `/v1/domains/{dom}/migrate` | [`MigrateRequest`] → [`SaveInfo`] |
//! | GET | `/v1/domains/{dom}/disks` | `[DiskInfo]` |
//! | POST | `/v1/domains/{dom}/disks` | [`AttachRequest`] → 201 [`DiskInfo`] |
//! | POST | `/v1/domains/{dom}/disks/{vdev}/detach` | [`DetachRequest`] → `{}` |
//! | GET | `/v1/domains/{dom}/nics` | `[NicInfo]` |
//! | POST | `/v1/domains/{dom}/nics` | [`AttachRequest`] → 201 [`NicInfo`] |
//! | POST | `/v1/domains/{dom}/nics/{devid}/detach` | [`DetachRequest`] → `{}` |
//! | GET | `/v1/version` | [`VersionInfo`] |
//!
//! Errors are `{"error": "..."}` with 400 (malformed request or JSON,
//! invalid config), 404 (unknown domain or path), 405 (wrong method), 408
//! (request not received in time), 409 (conflicting name, domain in the
//! wrong state), 413 (body too large), 431 (request line and headers too
//! large), 501 (`Transfer-Encoding`) or 500. One request per connection:
//! the server answers with `Connection: close` and closes.

pub mod client;
pub mod devices;
pub mod server;

pub use devices::{AttachRequest, DetachRequest, DiskInfo, NicInfo};

use serde::{Deserialize, Serialize};

use crate::xlcfg::DomainConfig;

/// The version prefix of every route.
pub const API_PREFIX: &str = "/v1";

/// Why a domain shut down (xl's reason letter in position 5 of the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownReason {
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Watchdog,
    SoftReset,
}

impl ShutdownReason {
    /// xl's letter (`-rscwS`); poweroff shows as `-`.
    pub fn letter(self) -> char {
        match self {
            ShutdownReason::Poweroff => '-',
            ShutdownReason::Reboot => 'r',
            ShutdownReason::Suspend => 's',
            ShutdownReason::Crash => 'c',
            ShutdownReason::Watchdog => 'w',
            ShutdownReason::SoftReset => 'S',
        }
    }

    /// From SCHEDOP_shutdown's reason code.
    pub fn from_code(code: u32) -> ShutdownReason {
        match code {
            0 => ShutdownReason::Poweroff,
            1 => ShutdownReason::Reboot,
            2 => ShutdownReason::Suspend,
            3 => ShutdownReason::Crash,
            4 => ShutdownReason::Watchdog,
            5 => ShutdownReason::SoftReset,
            _ => ShutdownReason::Crash,
        }
    }
}

/// The state flags behind xl's six-letter state column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainState {
    /// A vCPU is running (not blocked).
    pub running: bool,
    /// Every online vCPU is blocked.
    pub blocked: bool,
    pub paused: bool,
    /// The domain shut down and is kept (`preserve`) or about to be acted on.
    pub shutdown: bool,
    pub reason: Option<ShutdownReason>,
    /// The domain is being destroyed.
    pub dying: bool,
}

impl DomainState {
    /// xl's `r b p s c d` column, e.g. `-b----`, `r-----`, `---sc-`.
    pub fn letters(&self) -> String {
        let f = |on: bool, c: char| if on { c } else { '-' };
        let reason = if self.shutdown {
            self.reason.map_or('-', ShutdownReason::letter)
        } else {
            '-'
        };
        [
            f(self.running, 'r'),
            f(self.blocked, 'b'),
            f(self.paused, 'p'),
            f(self.shutdown, 's'),
            reason,
            f(self.dying, 'd'),
        ]
        .iter()
        .collect()
    }
}

/// What `GET /v1/domains/{dom}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Host-unique domain id (>= 1; 0 is Domain-0, the host).
    pub id: u32,
    pub name: String,
    pub uuid: String,
    /// xl's six state letters, e.g. `-b----`.
    pub state: String,
    pub flags: DomainState,
    /// Current memory, MiB.
    pub mem_mib: u64,
    pub maxmem_mib: u64,
    /// vCPUs online now (the configured count before the guest runs).
    pub vcpus: u32,
    pub max_vcpus: u32,
    /// CPU seconds used by the domain's monitor process.
    pub time_s: f64,
    /// The monitor process.
    pub pid: u32,
    /// Unix time the domain was created, in seconds.
    pub started: u64,
    /// How many times the guest was started (1 + restarts after reboot).
    pub boots: u32,
    pub on_poweroff: String,
    pub on_reboot: String,
    pub on_crash: String,
    /// The domain's run directory (sockets, pid, log).
    pub dir: String,
    pub xenstore_socket: String,
    pub console_socket: String,
    pub log: String,
}

/// `POST /v1/domains`: the domain to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub config: DomainConfig,
    /// Where relative `kernel`/`ramdisk` paths are looked up first (the
    /// config file's directory); absolute paths are used as they are.
    #[serde(default)]
    pub config_dir: Option<String>,
    /// Leave the domain paused once it is built (`xl create -p`);
    /// `resume` runs it.
    #[serde(default)]
    pub paused: bool,
    /// Restore the domain from this save file (`xl restore`) instead of
    /// booting it; `config` is the one the file carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
}

/// `POST /v1/domains/{dom}/save` (`xl save`): suspend the guest, write it
/// to `path` (on the monitor's host) and destroy the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveRequest {
    pub path: String,
}

/// What a save wrote, and how long the guest took to suspend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveInfo {
    pub path: String,
    pub bytes: u64,
    pub pages: u64,
    /// From the suspend request to the guest's SCHEDOP_shutdown(suspend).
    pub suspend_ms: u64,
    /// Writing the image (a migration: its final round and the answer).
    pub write_ms: u64,
    /// A live migration: the frames sent in each pre-copy round (the
    /// first is all memory, the last the final round).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<u64>,
    /// A live migration: how long the guest did not run, from its suspend
    /// to the receiver's answer that it runs there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

/// `POST /v1/domains/{dom}/migrate` (`xl migrate`): send the domain live
/// to a receiver (`xenkvm migrate-receive`) listening on the unix socket
/// `socket`; the domain is destroyed here once it runs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub socket: String,
}

/// One vCPU in `GET /v1/domains/{dom}/vcpus` (`xl vcpu-list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuInfo {
    pub id: u32,
    /// Brought up by the guest (vCPU 0 always is while the domain runs).
    pub online: bool,
    /// Running guest code or ready to (not blocked, not paused).
    pub running: bool,
    /// Waiting in SCHEDOP_block / SCHEDOP_poll.
    pub blocked: bool,
    /// The host CPU its thread last ran on.
    pub cpu: Option<u32>,
    /// CPU seconds used by its thread in this boot.
    pub time_s: f64,
    /// Host CPUs its thread may run on, as xl prints them (`all`, `0-3`).
    pub affinity: String,
}

/// `POST /v1/domains/{dom}/vcpus`: how many vCPUs the guest should have
/// online (`xl vcpu-set`; through xenstore `cpu/N/availability`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuSetRequest {
    pub count: u32,
}

/// `POST /v1/domains/{dom}/memory`: the guest's memory target (`xl
/// mem-set`; its balloon driver reads xenstore `memory/target`) and/or the
/// domain's maximum (`xl mem-max`), MiB. At least one is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mib: Option<u64>,
}

/// `POST /v1/domains/{dom}/sysrq`: the magic SysRq key to send
/// (`xl sysrq`; the guest reads it from xenstore `control/sysrq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysrqRequest {
    pub key: String,
}

impl SysrqRequest {
    /// The key, if it is one printable ASCII character (as xl insists).
    pub fn key(&self) -> Result<char, ApiError> {
        let mut c = self.key.chars();
        match (c.next(), c.next()) {
            (Some(k), None) if k.is_ascii_graphic() => Ok(k),
            _ => Err(ApiError::BadRequest(format!(
                "invalid sysrq key {:?}: one printable character",
                self.key
            ))),
        }
    }
}

/// `GET /v1/domains/{dom}/console`: where to attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleInfo {
    /// A unix stream socket: bytes read are the guest's console output
    /// (starting with recent history), bytes written are its input.
    pub socket: String,
    /// Clients attached now.
    pub clients: u32,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub api: String,
}

/// The error body of every failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A failed API request, mapped to its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn unknown_domain(dom: &str) -> ApiError {
        ApiError::NotFound(format!("unknown domain '{dom}'"))
    }
}

/// The lifecycle operations on a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainOp {
    Pause,
    Resume,
    Shutdown,
    Reboot,
    Destroy,
}

impl DomainOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainOp::Pause => "pause",
            DomainOp::Resume => "resume",
            DomainOp::Shutdown => "shutdown",
            DomainOp::Reboot => "reboot",
            DomainOp::Destroy => "destroy",
        }
    }

    /// The path segment (`unpause` is accepted for `resume`).
    pub fn parse(s: &str) -> Option<DomainOp> {
        Some(match s {
            "pause" => DomainOp::Pause,
            "resume" | "unpause" => DomainOp::Resume,
            "shutdown" => DomainOp::Shutdown,
            "reboot" => DomainOp::Reboot,
            "destroy" => DomainOp::Destroy,
            _ => return None,
        })
    }

    /// Shutdown, reboot and destroy are accepted (202) and finish later.
    pub fn is_async(self) -> bool {
        matches!(
            self,
            DomainOp::Shutdown | DomainOp::Reboot | DomainOp::Destroy
        )
    }
}

/// What a monitor process does for the API server.
pub trait Backend: Send + Sync {
    /// The domains this socket serves (one per monitor, none before create).
    fn list(&self) -> Vec<DomainInfo>;
    fn create(&self, req: CreateRequest) -> Result<DomainInfo, ApiError>;
    fn info(&self, dom: &str) -> Result<DomainInfo, ApiError>;
    fn op(&self, dom: &str, op: DomainOp) -> Result<DomainInfo, ApiError>;
    fn console(&self, dom: &str) -> Result<ConsoleInfo, ApiError>;
    /// The domain's vCPUs.
    fn vcpus(&self, dom: &str) -> Result<Vec<VcpuInfo>, ApiError> {
        self.info(dom).map(|_| Vec::new())
    }
    /// Ask the guest to have `count` vCPUs online.
    fn vcpu_set(&self, dom: &str, count: u32) -> Result<DomainInfo, ApiError> {
        let _ = (dom, count);
        Err(ApiError::NotFound("vcpu-set is not supported here".into()))
    }
    /// Send a magic SysRq key to the guest.
    fn sysrq(&self, dom: &str, key: char) -> Result<DomainInfo, ApiError> {
        let _ = (dom, key);
        Err(ApiError::NotFound("sysrq is not supported here".into()))
    }
    /// Set the guest's memory target and/or the domain's maximum.
    fn memory(&self, dom: &str, req: &MemoryRequest) -> Result<DomainInfo, ApiError> {
        let _ = (dom, req);
        Err(ApiError::NotFound(
            "mem-set/mem-max are not supported here".into(),
        ))
    }
    /// The domain's PV disks.
    fn disks(&self, dom: &str) -> Result<Vec<DiskInfo>, ApiError> {
        self.info(dom).map(|_| Vec::new())
    }
    /// Add a PV disk to the running domain (an xl disk spec).
    fn disk_attach(&self, dom: &str, spec: &str) -> Result<DiskInfo, ApiError> {
        let _ = (dom, spec);
        Err(ApiError::NotFound(
            "block-attach is not supported here".into(),
        ))
    }
    /// Remove PV disk `id` (a vdev or devid).
    fn disk_detach(&self, dom: &str, id: &str, req: &DetachRequest) -> Result<(), ApiError> {
        let _ = (dom, id, req);
        Err(ApiError::NotFound(
            "block-detach is not supported here".into(),
        ))
    }
    /// The domain's PV nics.
    fn nics(&self, dom: &str) -> Result<Vec<NicInfo>, ApiError> {
        self.info(dom).map(|_| Vec::new())
    }
    /// Add a PV nic to the running domain (an xl vif spec).
    fn nic_attach(&self, dom: &str, spec: &str) -> Result<NicInfo, ApiError> {
        let _ = (dom, spec);
        Err(ApiError::NotFound(
            "network-attach is not supported here".into(),
        ))
    }
    /// Suspend the guest, save it to a file and destroy it (`xl save`).
    fn save(&self, dom: &str, req: &SaveRequest) -> Result<SaveInfo, ApiError> {
        let _ = (dom, req);
        Err(ApiError::NotFound("save is not supported here".into()))
    }
    /// Live-migrate the domain to a receiver (`xl migrate`).
    fn migrate(&self, dom: &str, req: &MigrateRequest) -> Result<SaveInfo, ApiError> {
        let _ = (dom, req);
        Err(ApiError::NotFound("migrate is not supported here".into()))
    }
    /// Remove PV nic `id` (a devid or MAC).
    fn nic_detach(&self, dom: &str, id: &str, req: &DetachRequest) -> Result<(), ApiError> {
        let _ = (dom, id, req);
        Err(ApiError::NotFound(
            "network-detach is not supported here".into(),
        ))
    }
}

/// Does `dom` (a name or a decimal id) name the domain `(id, name)`?
pub fn matches_domain(dom: &str, id: u32, name: &str) -> bool {
    dom == name || dom.parse::<u32>().is_ok_and(|n| n == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letters_follow_xl() {
        let mut s = DomainState {
            blocked: true,
            ..Default::default()
        };
        assert_eq!(s.letters(), "-b----");
        s = DomainState {
            running: true,
            ..Default::default()
        };
        assert_eq!(s.letters(), "r-----");
        s = DomainState {
            paused: true,
            ..Default::default()
        };
        assert_eq!(s.letters(), "--p---");
        s = DomainState {
            shutdown: true,
            reason: Some(ShutdownReason::Crash),
            ..Default::default()
        };
        assert_eq!(s.letters(), "---sc-");
        s.reason = Some(ShutdownReason::Poweroff);
        s.dying = true;
        assert_eq!(s.letters(), "---s-d");
    }

    #[test]
    fn ops_and_domain_matching() {
        assert_eq!(DomainOp::parse("unpause"), Some(DomainOp::Resume));
        assert_eq!(DomainOp::parse("resume"), Some(DomainOp::Resume));
        assert_eq!(DomainOp::parse("explode"), None);
        assert!(matches_domain("web", 3, "web"));
        assert!(matches_domain("3", 3, "web"));
        assert!(!matches_domain("4", 3, "web"));
        assert!(!matches_domain("we", 3, "web"));
    }

    #[test]
    fn sysrq_keys_are_one_printable_character() {
        let k = |s: &str| SysrqRequest { key: s.into() }.key();
        assert_eq!(k("h"), Ok('h'));
        assert_eq!(k("b"), Ok('b'));
        for bad in ["", "hh", " ", "\n", "\u{0}", "é"] {
            assert!(k(bad).is_err(), "{bad:?}");
        }
    }
}
