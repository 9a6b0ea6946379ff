//! Domains as background processes, managed like xl manages Xen domains.
//!
//! - [`registry`]: the run directory (`<run>/domains/<name>/...`), unique
//!   names and ids, pid files, cleanup after dead monitors.
//! - [`monitor`]: the per-domain monitor process: it serves the control API
//!   (`api::control`) on `api.sock`, runs the guest, applies
//!   `on_poweroff`/`on_reboot`/`on_crash`, pauses and resumes vCPUs.
//! - [`console`]: the guest console as a unix socket (`console.sock`) that
//!   clients attach to and detach from.
//! - [`signals`]: SIGTERM/SIGINT/SIGHUP stop the guest and clean up.
//! - [`verbs`]: `create` (background), `list`, `console`, `shutdown`,
//!   `reboot`, `destroy`, `pause`, `unpause`, `info`, through the API.
//! - [`inspect`]: `domid`, `domname`, `uptime`, `vcpu-list`, `dmesg`,
//!   `sysrq`, `vcpu-set`.
//! - [`vcpus`]: what `vcpu-list` shows of each vCPU thread.
//! - [`top`]: `top`, one screen of `xentop -b -i 1`.
//! - [`devverbs`]: `block-attach`/`-detach`/`-list`, `network-attach`/
//!   `-detach`/`-list` (the devices themselves: `crate::hotplug`).
//!
//! [`HostControl`] is the small piece the vCPU threads see: the pause gate,
//! which vCPUs are blocked, and where console output goes.

pub mod console;
pub mod devverbs;
pub mod inspect;
pub mod monitor;
pub mod registry;
pub mod signals;
pub mod top;
pub mod vcpus;
pub mod verbs;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Where guest console output goes instead of stdout.
pub type ConsoleSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Per-boot control state shared with the vCPU threads (lives in `Host`).
#[derive(Default)]
pub struct HostControl {
    paused: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    /// Bit per vCPU waiting in SCHEDOP_block / SCHEDOP_poll.
    blocked: AtomicU64,
    /// Console output goes here when set (background domains).
    pub sink: OnceLock<ConsoleSink>,
}

impl HostControl {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Set or clear the pause gate. The caller kicks the vCPUs after pausing
    /// so that they leave KVM_RUN and stop at the gate.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    /// Called by a vCPU thread before entering the guest: wait while the
    /// domain is paused (or until `stop`).
    pub fn wait_unpaused(&self, stop: &AtomicBool) {
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.is_paused() && !stop.load(Ordering::SeqCst) {
            g = match self.cv.wait_timeout(g, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Wake a paused vCPU waiting at the gate (used with `stop`).
    pub fn wake(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    /// Mark vCPU `id` blocked until the guard is dropped.
    pub fn blocked_guard(&self, id: u32) -> BlockedGuard<'_> {
        let bit = if id < 64 { 1u64 << id } else { 0 };
        self.blocked.fetch_or(bit, Ordering::SeqCst);
        BlockedGuard { ctl: self, bit }
    }

    /// vCPUs blocked now (bit per vCPU).
    pub fn blocked_mask(&self) -> u64 {
        self.blocked.load(Ordering::SeqCst)
    }
}

pub struct BlockedGuard<'a> {
    ctl: &'a HostControl,
    bit: u64,
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        self.ctl.blocked.fetch_and(!self.bit, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_gate_and_blocked_mask() {
        let c = Arc::new(HostControl::default());
        let stop = Arc::new(AtomicBool::new(false));
        c.set_paused(true);
        let (c2, s2) = (c.clone(), stop.clone());
        let t = std::thread::spawn(move || c2.wait_unpaused(&s2));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished());
        c.set_paused(false);
        t.join().unwrap();
        c.set_paused(true);
        let (c2, s2) = (c.clone(), stop.clone());
        let t = std::thread::spawn(move || c2.wait_unpaused(&s2));
        stop.store(true, Ordering::SeqCst);
        c.wake();
        t.join().unwrap();
        {
            let _g = c.blocked_guard(3);
            assert_eq!(c.blocked_mask(), 8);
        }
        assert_eq!(c.blocked_mask(), 0);
    }
}
