//! Waking backend threads: a [`Kick`] per ring, and the table that routes a
//! guest's event-channel notification (backend id) to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// A coalescing wake-up flag for one thread.
#[derive(Default)]
pub struct Kick {
    pending: Mutex<bool>,
    cv: Condvar,
    /// Also signalled, for a thread that waits in epoll (the vhost-user bridge).
    fd: Option<vmm_sys_util::eventfd::EventFd>,
}

impl Kick {
    /// A kick that also signals `fd`.
    pub fn with_eventfd(fd: vmm_sys_util::eventfd::EventFd) -> Kick {
        Kick {
            fd: Some(fd),
            ..Kick::default()
        }
    }

    pub fn kick(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p = true;
        self.cv.notify_one();
        drop(p);
        if let Some(fd) = &self.fd {
            let _ = fd.write(1);
        }
    }

    /// Wait until kicked or `timeout` passes; true when kicked.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !*p {
            p = self
                .cv
                .wait_timeout(p, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::take(&mut *p)
    }
}

/// Backend ids 0 and 1 are the console and xenstore (see `xen_shim::evtchn`).
pub const FIRST_DEVICE_BACKEND: u32 = 2;

/// Backend id -> the kick of the thread serving it.
pub struct Backends {
    next: AtomicU32,
    kicks: RwLock<HashMap<u32, Arc<Kick>>>,
}

impl Default for Backends {
    fn default() -> Self {
        Backends {
            next: AtomicU32::new(FIRST_DEVICE_BACKEND),
            kicks: RwLock::new(HashMap::new()),
        }
    }
}

impl Backends {
    /// A new backend id whose notifications kick `kick`.
    pub fn register(&self, kick: Arc<Kick>) -> u32 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.kicks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, kick);
        id
    }

    pub fn unregister(&self, id: u32) {
        self.kicks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// The guest notified a port bound to backend `id`.
    pub fn notify(&self, id: u32) {
        let k = self
            .kicks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some(k) = k {
            k.kick();
        }
    }
}
