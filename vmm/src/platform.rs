//! The monitor side of the Xen core's `Platform`: console output, vCPU
//! kicks, the TSC, and notifications to the monitor's own backends.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use xen_shim::domain::{Domain, Platform};
use xen_shim::evtchn::{BACKEND_CONSOLE, BACKEND_XENSTORE};

use crate::xs::XsBackend;

/// Per-vCPU wake-up state shared with other threads.
#[derive(Default)]
pub struct VcpuSignal {
    pub kicked: AtomicBool,
    pub lock: Mutex<()>,
    pub cv: Condvar,
    /// pthread id of the vCPU thread while it runs (0 otherwise); the lock
    /// keeps the thread alive while a kick signals it.
    pub thread: Mutex<u64>,
    /// Timer deadline in system-time ns (u64::MAX = none).
    pub deadline: AtomicU64,
    /// Another vCPU asked this one to flush its TLB.
    pub flush: AtomicBool,
    /// The vCPU is inside KVM_RUN (it may be running guest code).
    pub in_guest: AtomicBool,
    /// How many deadlines the vCPU thread has taken from its ring-0 data
    /// page (crate::ring0_fast): the timer thread kicks once per published
    /// deadline, not at every look until the vCPU takes it.
    pub fast_taken: AtomicU64,
    /// Linux thread id of the vCPU thread while it runs (0 otherwise), for
    /// `xenkvm vcpu-list` (its CPU, time and affinity in /proc).
    pub tid: AtomicU32,
}

pub const KICK_SIGNAL: i32 = 34; // SIGRTMIN

pub struct Host {
    pub vcpus: Vec<Arc<VcpuSignal>>,
    pub stop: AtomicBool,
    /// The user pressed the console escape.
    pub escaped: AtomicBool,
    console_tail: Mutex<VecDeque<u8>>,
    /// Pause gate, blocked vCPUs and console routing (`xenkvm` control verbs).
    pub control: crate::control::HostControl,
    pub domain: OnceLock<Weak<Domain>>,
    pub xs: OnceLock<Arc<XsBackend>>,
    /// The PV device backends' threads, by backend id.
    pub backends: Arc<devices::notify::Backends>,
    /// The boot's PV disks and nics (hotplug).
    pub devices: OnceLock<crate::hotplug::SharedDevices>,
    pub console_lock: Mutex<()>,
    drain_lock: Mutex<()>,
    /// The vCPU state kept at SCHEDOP_shutdown(suspend) (crate::migrate).
    pub suspended: Mutex<Option<crate::migrate::SuspendedVcpu>>,
    /// The other online vCPUs' states, kept as they stopped after it.
    pub suspended_others: Mutex<Vec<Result<crate::migrate::SuspendedVcpu, String>>>,
    /// KVM's dirty log of guest RAM (live migration).
    pub dirty_log: OnceLock<crate::migrate::dirty::DirtyLog>,
}

impl Host {
    pub fn new(nr_vcpus: u32) -> Host {
        Host {
            vcpus: (0..nr_vcpus)
                .map(|_| {
                    Arc::new(VcpuSignal {
                        deadline: AtomicU64::new(u64::MAX),
                        ..Default::default()
                    })
                })
                .collect(),
            stop: AtomicBool::new(false),
            escaped: AtomicBool::new(false),
            console_tail: Mutex::new(VecDeque::new()),
            control: Default::default(),
            domain: OnceLock::new(),
            xs: OnceLock::new(),
            backends: Default::default(),
            devices: OnceLock::new(),
            console_lock: Mutex::new(()),
            drain_lock: Mutex::new(()),
            suspended: Mutex::new(None),
            suspended_others: Mutex::new(Vec::new()),
            dirty_log: OnceLock::new(),
        }
    }

    /// Guest console bytes to stdout (or the control sink), remembering the tail for crash reports.
    pub fn output(&self, data: &[u8]) {
        let _g = self.console_lock.lock();
        if let Some(sink) = self.control.sink.get() {
            sink(data);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        let mut t = self.console_tail.lock().unwrap_or_else(|e| e.into_inner());
        t.extend(data.iter().copied());
        while t.len() > 4096 {
            t.pop_front();
        }
    }

    /// The last `n` lines the guest printed.
    pub fn last_lines(&self, n: usize) -> String {
        let t = self.console_tail.lock().unwrap_or_else(|e| e.into_inner());
        let s: Vec<u8> = t.iter().copied().collect();
        let s = String::from_utf8_lossy(&s);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for v in 0..self.vcpus.len() as u32 {
            self.kick(v);
        }
    }

    /// Drain the PV console ring to stdout.
    pub fn console_drain(&self, dom: &Domain) {
        // vCPUs drain on send and on yield: one at a time, or bytes repeat.
        let _one = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
        let gpa = dom.layout.console_mfn << 12;
        let mem = &*dom.mem;
        let (Ok(cons), Ok(prod)) = (mem.read_u32(gpa + 0xc08), mem.read_u32(gpa + 0xc0c)) else {
            return;
        };
        let n = prod.wrapping_sub(cons);
        if n == 0 || n > 2048 {
            if n > 2048 {
                // Hostile indices: resynchronise rather than loop.
                let _ = mem.write_u32(gpa + 0xc08, prod);
            }
            return;
        }
        // out[2048] at 0x400, read as at most two slices around the wrap.
        let start = (cons & 2047) as usize;
        let first = (n as usize).min(2048 - start);
        let mut buf = vec![0u8; n as usize];
        let (a, b) = buf.split_at_mut(first);
        if mem.read(gpa + 0x400 + start as u64, a).is_err() || mem.read(gpa + 0x400, b).is_err() {
            return;
        }
        self.output(&buf);
        let _ = mem.write_u32(gpa + 0xc08, prod);
        dom.raise_port(dom.layout.console_port);
    }
}

impl Platform for Host {
    fn console_write(&self, data: &[u8]) {
        self.output(data);
    }

    fn kick(&self, vcpu: u32) {
        let Some(s) = self.vcpus.get(vcpu as usize) else {
            return;
        };
        s.kicked.store(true, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        let t = s.thread.lock().unwrap_or_else(|e| e.into_inner());
        if *t != 0 {
            // SAFETY: the thread is alive: it clears the id under this lock
            // before it exits.
            unsafe {
                libc::pthread_kill(*t as libc::pthread_t, KICK_SIGNAL);
            }
        }
    }

    fn tsc(&self) -> u64 {
        // SAFETY: rdtsc has no preconditions; guest TSC equals host TSC.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// A frame changes type (Xen core, under the MMU lock): the vCPUs in
    /// `mask` must not run guest code again before a full flush. A vCPU
    /// inside KVM_RUN is kicked out and waited for; one outside takes the
    /// request before it runs guest code: it checks the flag after marking
    /// itself `in_guest` and before KVM_RUN, so one of the two sides sees
    /// the other. The caller, in the monitor, takes it on its way back.
    fn flush_tlbs(&self, mask: u64) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        let mut waiting = Vec::new();
        for (i, s) in self.vcpus.iter().enumerate().take(64) {
            if mask & (1 << i) == 0 {
                continue;
            }
            s.flush.store(true, Ordering::SeqCst);
            let caller = *s.thread.lock().unwrap_or_else(|e| e.into_inner()) == me;
            if !caller && s.in_guest.load(Ordering::SeqCst) {
                self.kick(i as u32);
                waiting.push((i, s));
            }
        }
        // No deadline: going on while a vCPU may still hold a stale writable
        // translation of the frame would let it write a page table (Xen waits
        // for its flush IPIs too). A vCPU in KVM_RUN leaves it on the kick; one
        // whose thread the host has not run yet does so when it runs. Kicks
        // are repeated in case one raced with the vCPU's way into the guest.
        let start = std::time::Instant::now();
        let mut next_kick = std::time::Duration::from_millis(100);
        let mut next_warn = std::time::Duration::from_secs(5);
        loop {
            let t = start.elapsed();
            let kick = t >= next_kick;
            let mut late = 0;
            for (i, s) in &waiting {
                if s.flush.load(Ordering::SeqCst) && s.in_guest.load(Ordering::SeqCst) {
                    late += 1;
                    if kick {
                        self.kick(*i as u32);
                    }
                }
            }
            if late == 0 || self.stop.load(Ordering::SeqCst) {
                return;
            }
            if kick {
                next_kick = t + std::time::Duration::from_millis(100);
            }
            if t >= next_warn {
                log::warn!(
                    "TLB flush on a page type change: still waiting for {late} vCPU(s) after {} s",
                    t.as_secs()
                );
                next_warn = t + std::time::Duration::from_secs(5);
            }
            std::thread::yield_now();
        }
    }

    fn backend_notify(&self, backend: u32, _port: u32) {
        let Some(dom) = self.domain.get().and_then(Weak::upgrade) else {
            return;
        };
        match backend {
            BACKEND_CONSOLE => self.console_drain(&dom),
            BACKEND_XENSTORE => {
                if let Some(xs) = self.xs.get() {
                    xs.process(&dom);
                }
            }
            other => self.backends.notify(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU still in the guest with its flush not taken holds the type
    /// change back however long that takes (it used to go on after 1 s,
    /// while the vCPU might still write through a stale translation).
    #[test]
    fn a_type_change_waits_for_every_flush_without_a_deadline() {
        let host = Arc::new(Host::new(2));
        host.vcpus[1].in_guest.store(true, Ordering::SeqCst);
        let slow = host.vcpus[1].clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            // The vCPU takes its flush (as its run loop does) at last.
            slow.flush.store(false, Ordering::SeqCst);
        });
        let start = std::time::Instant::now();
        host.flush_tlbs(0b10);
        let waited = start.elapsed();
        t.join().unwrap();
        assert!(
            waited >= std::time::Duration::from_millis(1400),
            "went on after {waited:?}, before the vCPU flushed"
        );
    }

    #[test]
    fn a_vcpu_outside_the_guest_is_not_waited_for() {
        let host = Host::new(2);
        let start = std::time::Instant::now();
        host.flush_tlbs(0b11);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            host.vcpus[1].flush.load(Ordering::SeqCst),
            "it takes the flush before it runs"
        );
    }
}
