//! vCPU threads: the boot vCPU and the secondary vCPUs the guest brings up
//! with VCPUOP_initialise / VCPUOP_up, and how their ends are collected.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use xen_shim::regs::Regs;
use xen_shim::vcpu::BootContext;

use crate::vcpu::{Vcpu, VcpuEnd};

/// What a vCPU thread reports when it ends.
pub struct VcpuReport {
    pub id: u32,
    pub end: VcpuEnd,
    pub dump: String,
    pub exits_by_reason: BTreeMap<&'static str, u64>,
    pub exits: u64,
    /// Register ioctls made (none per exit where registers travel in kvm_run).
    pub reg_ioctls: u64,
}

/// Holds the vCPUs that are not running yet and starts them on request.
pub struct Starter {
    parked: Mutex<Vec<Option<Vcpu>>>,
    contexts: Mutex<HashMap<u32, BootContext>>,
    tx: Mutex<Sender<VcpuReport>>,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Starter {
    pub fn new(parked: Vec<Option<Vcpu>>, tx: Sender<VcpuReport>) -> Starter {
        Starter {
            parked: Mutex::new(parked),
            contexts: Mutex::new(HashMap::new()),
            tx: Mutex::new(tx),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// VCPUOP_initialise: remember the context for `id`.
    pub fn set_context(&self, id: u32, ctx: BootContext) {
        self.contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, ctx);
    }

    /// VCPUOP_up: start vCPU `id` with its initialised context, or resume
    /// it where VCPUOP_down left it.
    pub fn up(self: &Arc<Self>, id: u32) {
        {
            let mut p = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            let slot = p.get_mut(id as usize);
            if let Some(slot) = slot.filter(|s| s.as_ref().is_some_and(|v| v.down_regs.is_some())) {
                let Some(mut vcpu) = slot.take() else { return };
                drop(p);
                let Some(regs) = vcpu.down_regs.take() else {
                    return;
                };
                vcpu.pv.dom.online.fetch_or(1 << id, Ordering::SeqCst);
                self.spawn(vcpu, regs);
                return;
            }
        }
        let ctx = self
            .contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        let Some(ctx) = ctx else {
            log::warn!("VCPUOP_up for vCPU {id} without VCPUOP_initialise; ignored");
            return;
        };
        let vcpu = {
            let mut p = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            p.get_mut(id as usize).and_then(Option::take)
        };
        let Some(mut vcpu) = vcpu else { return };
        match xen_shim::vcpuctx::apply_context(&mut vcpu.pv, &ctx) {
            Ok(regs) => {
                vcpu.pv.dom.online.fetch_or(1 << id, Ordering::SeqCst);
                self.spawn(vcpu, regs);
            }
            Err(e) => {
                log::warn!("vCPU {id}: invalid initial context (Xen error {e})");
                self.parked.lock().unwrap_or_else(|e| e.into_inner())[id as usize] = Some(vcpu);
            }
        }
    }

    /// Run `vcpu` from `regs` on its own thread.
    pub fn spawn(self: &Arc<Self>, mut vcpu: Vcpu, regs: Regs) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let me = self.clone();
        let me2 = self.clone();
        let id = vcpu.pv.id;
        let h = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                vcpu.starter = Some(me);
                // A monitor bug a guest reaches must not leave the monitor
                // waiting for a report that never comes: the domain crashes
                // with the panic in its report (and on_crash runs).
                let end = catch_panic(id, || vcpu.run(regs));
                vcpu.starter = None;
                for (name, n) in vcpu.fast_path_counts() {
                    if n > 0 {
                        *vcpu
                            .pv
                            .dom
                            .hypercall_counts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(name)
                            .or_insert(0) += n;
                    }
                }
                let report = VcpuReport {
                    id,
                    dump: vcpu.dump(),
                    end,
                    exits_by_reason: std::mem::take(&mut vcpu.pv.exits_by_reason),
                    exits: std::mem::take(&mut vcpu.exits),
                    reg_ioctls: std::mem::take(&mut vcpu.regs.ioctls),
                };
                if report.end == VcpuEnd::Down && id < 64 {
                    // Offline, and parked for a later VCPUOP_up (CPU
                    // hot-unplug, `xenkvm vcpu-set`).
                    vcpu.pv.dom.online.fetch_and(!(1 << id), Ordering::SeqCst);
                    let mut p = me2.parked.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = p.get_mut(id as usize) {
                        *slot = Some(vcpu);
                    }
                }
                let _ = tx.send(report);
            });
        match h {
            Ok(h) => self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(h),
            Err(e) => log::error!("cannot start vCPU {id} thread: {e}"),
        }
    }
}

/// Run `f`, turning a panic into a crash of the domain that names it.
fn catch_panic(id: u32, f: impl FnOnce() -> VcpuEnd) -> VcpuEnd {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(end) => end,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            VcpuEnd::Crash(format!("vCPU {id}: monitor bug (panic): {what}"))
        }
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;

    /// Issue 12 item 12: a panicking vCPU thread used to end without a
    /// report, and the monitor waited for ever.
    #[test]
    fn a_panic_becomes_a_crash_report() {
        let end = catch_panic(3, || panic!("attempt to add with overflow"));
        match end {
            VcpuEnd::Crash(m) => {
                assert!(m.contains("vCPU 3") && m.contains("overflow"), "{m}")
            }
            other => panic!("not a crash: {other:?}"),
        }
        assert!(matches!(catch_panic(0, || VcpuEnd::Down), VcpuEnd::Down));
    }
}
