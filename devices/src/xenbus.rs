//! The backend half of a xenbus device: its two xenstore directories, the
//! XenbusState handshake, and a watch on the frontend's state.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xen_shim::xenstore::{DevicePaths, Store, WatchEvent};

/// `enum xenbus_state` (xen/include/public/io/xenbus.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl State {
    pub fn parse(s: &str) -> State {
        match s.trim().parse::<u32>() {
            Ok(1) => State::Initialising,
            Ok(2) => State::InitWait,
            Ok(3) => State::Initialised,
            Ok(4) => State::Connected,
            Ok(5) => State::Closing,
            Ok(6) => State::Closed,
            Ok(7) => State::Reconfiguring,
            Ok(8) => State::Reconfigured,
            _ => State::Unknown,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XenbusError {
    #[error("xenstore {0}: {1:?}")]
    Store(String, xen_shim::xenstore::XsError),
}

pub type SharedStore = Arc<Mutex<Store>>;

/// A device pair as seen from its backend.
pub struct XenbusDev {
    store: SharedStore,
    pub paths: DevicePaths,
    events: Receiver<WatchEvent>,
    token: String,
}

impl XenbusDev {
    /// Start following the frontend's state.
    pub fn new(store: SharedStore, paths: DevicePaths) -> Result<XenbusDev, XenbusError> {
        let token = format!("xenkvm-backend:{}", paths.backend);
        let path = format!("{}/state", paths.frontend);
        let events = lock(&store)
            .watch_channel(&path, &token, 64)
            .map_err(|e| XenbusError::Store(format!("watch {path}"), e))?;
        Ok(XenbusDev {
            store,
            paths,
            events,
            token,
        })
    }

    /// A frontend key, if present.
    pub fn read_fe(&self, key: &str) -> Option<String> {
        lock(&self.store)
            .read_string(&format!("{}/{key}", self.paths.frontend))
            .ok()
    }

    /// A numeric frontend key; None when absent or not a number.
    pub fn read_fe_u64(&self, key: &str) -> Option<u64> {
        self.read_fe(key).and_then(|v| v.trim().parse().ok())
    }

    pub fn read_be(&self, key: &str) -> Option<String> {
        lock(&self.store)
            .read_string(&format!("{}/{key}", self.paths.backend))
            .ok()
    }

    /// Write backend keys in one transaction.
    pub fn write_be(&self, kv: &[(&str, String)]) -> Result<(), XenbusError> {
        let mut s = lock(&self.store);
        loop {
            let tx = s
                .transaction_start()
                .map_err(|e| XenbusError::Store("transaction".into(), e))?;
            for (k, v) in kv {
                let p = format!("{}/{k}", self.paths.backend);
                if let Err(e) = s.tx_write(tx, &p, v) {
                    let _ = s.transaction_end(tx, false);
                    return Err(XenbusError::Store(format!("write {p}"), e));
                }
            }
            match s.transaction_end(tx, true) {
                Ok(()) => return Ok(()),
                Err(xen_shim::xenstore::XsError::Again) => continue,
                Err(e) => return Err(XenbusError::Store("commit".into(), e)),
            }
        }
    }

    pub fn frontend_state(&self) -> State {
        self.read_fe("state")
            .map(|s| State::parse(&s))
            .unwrap_or(State::Unknown)
    }

    pub fn backend_state(&self) -> State {
        self.read_be("state")
            .map(|s| State::parse(&s))
            .unwrap_or(State::Unknown)
    }

    /// xenbus_switch_state.
    pub fn switch_state(&self, state: State) -> Result<(), XenbusError> {
        log::debug!("{}: backend state -> {state:?}", self.paths.backend);
        self.write_be(&[("state", (state as u32).to_string())])
    }

    /// Wait for a frontend state change (or `timeout`); false on timeout.
    pub fn wait_change(&self, timeout: Duration) -> bool {
        match self.events.recv_timeout(timeout) {
            Ok(_) => {
                while self.events.try_recv().is_ok() {}
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                false
            }
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }
}

impl Drop for XenbusDev {
    fn drop(&mut self) {
        let path = format!("{}/state", self.paths.frontend);
        let _ = lock(&self.store).unwatch(&path, &self.token);
    }
}

fn lock(s: &SharedStore) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Grant references of a (possibly multi-page) ring as the frontend wrote
/// them under `prefix`: `ring-ref` for one page, or `ring-page-order` and
/// `ring-ref0..N`. None when absent or beyond `max_order`.
pub fn ring_refs(dev: &XenbusDev, prefix: &str, max_order: u32) -> Option<Vec<u32>> {
    let order = dev
        .read_fe_u64(&format!("{prefix}ring-page-order"))
        .unwrap_or(0);
    if order > u64::from(max_order) {
        log::warn!(
            "{}: ring-page-order {order} > {max_order}",
            dev.paths.frontend
        );
        return None;
    }
    if order == 0 {
        if let Some(r) = dev.read_fe_u64(&format!("{prefix}ring-ref")) {
            return u32::try_from(r).ok().map(|r| vec![r]);
        }
    }
    (0..1u32 << order)
        .map(|i| {
            dev.read_fe_u64(&format!("{prefix}ring-ref{i}"))
                .and_then(|r| u32::try_from(r).ok())
        })
        .collect()
}

/// What every backend needs from the monitor.
#[derive(Clone)]
pub struct BackendCtx {
    /// The guest (memory, event channels, grant table).
    pub dom: Arc<xen_shim::domain::Domain>,
    /// The guest's xenstore.
    pub store: SharedStore,
    /// Routes the guest's notifications to backend threads.
    pub backends: Arc<crate::notify::Backends>,
    /// The guest's RAM for vhost-user backends, when it is shared.
    pub shared_ram: Option<crate::vhost_user::SharedRam>,
}

impl BackendCtx {
    /// Bind the frontend's unbound `port` to a new backend id that kicks
    /// `kick`; returns the id.
    pub fn bind_port(&self, port: u32, kick: Arc<crate::notify::Kick>) -> Option<u32> {
        let id = self.backends.register(kick);
        let r = self
            .dom
            .evtchn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bind_backend(port, id);
        if r.is_err() {
            self.backends.unregister(id);
            return None;
        }
        Some(id)
    }

    /// Undo [`BackendCtx::bind_port`].
    pub fn unbind_port(&self, port: u32, id: u32) {
        self.dom
            .evtchn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unbind_backend(port, id);
        self.backends.unregister(id);
    }

    /// Notify the frontend on `port`.
    pub fn notify(&self, port: u32) {
        self.dom.raise_port(port);
    }
}
