//! Per-domain Xen state shared by all vCPUs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::abi::shinfo;
use crate::cpuid::CpuidPolicy;
use crate::evtchn::EventChannels;
use crate::mem::GuestMem;
use crate::mmu::Mmu;
use crate::time::Clock;

/// What the monitor provides to the Xen core.
pub trait Platform: Send + Sync {
    /// Guest output of CONSOLEIO_write.
    fn console_write(&self, data: &[u8]);
    /// Make vCPU `vcpu` notice new events (interrupt KVM_RUN or wake it).
    fn kick(&self, vcpu: u32);
    /// The current guest TSC.
    fn tsc(&self) -> u64;
    /// The guest sent an event on an interdomain port bound to backend `backend`.
    fn backend_notify(&self, backend: u32, port: u32);
    /// Flush the TLBs of the vCPUs in `mask` (bit per vCPU) before
    /// returning: each either has flushed or takes a full flush (and calls
    /// [`crate::tlb::TlbClock::note_flush`]) before it runs guest code
    /// again. The calling vCPU may be in the mask.
    fn flush_tlbs(&self, mask: u64);
}

/// Static facts of a domain, fixed by the builder.
#[derive(Debug, Clone)]
pub struct DomainLayout {
    pub domid: u16,
    pub nr_pages: u64,
    pub max_vcpus: u32,
    pub shared_info_gpa: u64,
    /// Guest-physical base of the monitor's M2P table (u64 per frame).
    pub m2p_gpa: u64,
    pub m2p_entries: u64,
    /// Guest-virtual address of the read-only M2P (XENMEM_machphys_mapping).
    pub m2p_va: u64,
    pub console_mfn: u64,
    pub console_port: u32,
    pub store_mfn: u64,
    pub store_port: u32,
    /// The domain's grant table (v1) frames, in the monitor area.
    pub grant_gpa: u64,
    pub grant_frames: u32,
}

pub struct Domain {
    pub mem: Arc<dyn GuestMem>,
    pub layout: DomainLayout,
    pub mmu: Mutex<Mmu>,
    /// TLB flush clock: the monitor ticks it for a vCPU at each full flush.
    pub tlb: Arc<crate::tlb::TlbClock>,
    pub evtchn: Mutex<EventChannels>,
    pub cpuid: CpuidPolicy,
    pub clock: Clock,
    pub platform: Arc<dyn Platform>,
    pub vm_assist: AtomicU64,
    /// Per-vCPU guest-physical address of its vcpu_info (registered copy or legacy slot).
    /// Read on every exit, so lock-free.
    pub vcpu_info: Vec<AtomicU64>,
    /// vCPUs brought online (bit per vCPU).
    pub online: AtomicU64,
    /// vCPUs with a context (bit per vCPU): the boot vCPU and those given
    /// one by VCPUOP_initialise (Xen's `is_initialised`).
    pub initialised: AtomicU64,
    /// console_io byte budget.
    pub console_budget: crate::conio::ConsoleBudget,
    /// Guest-triggered log lines: once per static key, rate-limited.
    pub guest_log: crate::guestlog::GuestLog,
    pub hypercall_counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Grant entries mapped by the monitor's backends.
    pub grants: Mutex<crate::grantmap::ActiveGrants>,
    /// Monitor exits per vCPU (and whether the guest may read them).
    pub exit_stats: crate::stats::ExitStats,
    /// Most frames the domain may have populated (Xen's max_pages;
    /// `xenkvm mem-max`); at most `layout.nr_pages`.
    pub max_pages: AtomicU64,
    /// Where shared_info is now: `layout.shared_info_gpa` for a PV domain;
    /// an HVM/PVH guest places it with XENMEM_add_to_physmap.
    shared_info: AtomicU64,
}

impl Domain {
    pub fn new(
        mem: Arc<dyn GuestMem>,
        layout: DomainLayout,
        mut mmu: Mmu,
        cpuid: CpuidPolicy,
        clock: Clock,
        platform: Arc<dyn Platform>,
    ) -> Domain {
        let tlb = Arc::new(crate::tlb::TlbClock::new(layout.max_vcpus));
        mmu.attach_tlb(tlb.clone(), platform.clone());
        let vcpu_info = (0..layout.max_vcpus)
            .map(|i| {
                layout.shared_info_gpa
                    + u64::from(i.min(shinfo::LEGACY_VCPUS - 1)) * shinfo::VCPU_INFO_SIZE
            })
            .map(AtomicU64::new)
            .collect();
        let evtchn = EventChannels::new(&layout);
        Domain {
            mem,
            mmu: Mutex::new(mmu),
            tlb,
            evtchn: Mutex::new(evtchn),
            cpuid,
            clock,
            platform,
            vm_assist: AtomicU64::new(0),
            vcpu_info,
            online: AtomicU64::new(1),
            initialised: AtomicU64::new(1),
            console_budget: Default::default(),
            guest_log: crate::guestlog::GuestLog::new(),
            hypercall_counts: Mutex::new(BTreeMap::new()),
            grants: Mutex::new(Default::default()),
            exit_stats: crate::stats::ExitStats::new(layout.max_vcpus),
            max_pages: AtomicU64::new(layout.nr_pages),
            shared_info: AtomicU64::new(layout.shared_info_gpa),
            layout,
        }
    }

    /// Log something the guest triggered (an unimplemented call, an
    /// unknown MSR...) once per key: a static `id` and a number (`detail`),
    /// never the formatted text, which may carry guest-chosen values. The
    /// set of keys is bounded and the lines are rate-limited per domain
    /// (see [`crate::guestlog`]); `msg` is formatted only when logged.
    pub fn log_once(&self, id: &'static str, detail: u64, msg: impl FnOnce() -> String) {
        self.guest_log.once(id, detail, msg);
    }

    /// How many log_once keys are remembered (bounded by
    /// [`crate::guestlog::MAX_REMEMBERED`]).
    pub fn log_once_remembered(&self) -> usize {
        self.guest_log.remembered()
    }

    pub fn count_hypercall(&self, name: &'static str) {
        let mut m = self
            .hypercall_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(name).or_insert(0) += 1;
    }

    pub fn vcpu_info_gpa(&self, vcpu: u32) -> u64 {
        self.vcpu_info
            .get(vcpu as usize)
            .map(|a| a.load(Ordering::Acquire))
            .unwrap_or_else(|| self.shared_info_gpa())
    }

    /// The guest-physical address of shared_info.
    pub fn shared_info_gpa(&self) -> u64 {
        self.shared_info.load(Ordering::Acquire)
    }

    /// The legacy vcpu_info slot of `vcpu` in the shared_info at `si`.
    pub fn legacy_vcpu_info(si: u64, vcpu: u32) -> u64 {
        si + u64::from(vcpu.min(shinfo::LEGACY_VCPUS - 1)) * shinfo::VCPU_INFO_SIZE
    }

    /// An HVM/PVH guest put shared_info at `gpa` (XENMEM_add_to_physmap):
    /// vCPUs that use their legacy slot follow it; registered ones stay.
    pub fn move_shared_info(&self, gpa: u64) {
        let old = self.shared_info.swap(gpa, Ordering::AcqRel);
        for (i, slot) in self.vcpu_info.iter().enumerate() {
            let i = i as u32;
            let _ = slot.compare_exchange(
                Self::legacy_vcpu_info(old, i),
                Self::legacy_vcpu_info(gpa, i),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Initial shared_info contents: all upcalls masked, time and wallclock valid.
    pub fn init_shared_info(&self) {
        let si = self.shared_info_gpa();
        let _ = self.mem.write(si, &[0u8; 4096]);
        for i in 0..shinfo::LEGACY_VCPUS {
            let vi = si + u64::from(i) * shinfo::VCPU_INFO_SIZE;
            let _ = self.mem.write_u8(vi + shinfo::UPCALL_MASK, 1);
            let _ = self.clock.write_time_info(&*self.mem, vi + shinfo::TIME);
        }
        let _ = self.clock.write_wallclock(&*self.mem, si);
    }

    /// Mark `port` pending (2-level ABI) and kick the vCPU it is bound to.
    pub fn raise_port(&self, port: u32) {
        let vcpu = {
            let ev = self.evtchn.lock().unwrap_or_else(|e| e.into_inner());
            ev.vcpu_of(port)
        };
        let Some(vcpu) = vcpu else { return };
        if crate::evtchn::set_pending(
            &*self.mem,
            self.shared_info_gpa(),
            self.vcpu_info_gpa(vcpu),
            port,
        ) {
            self.platform.kick(vcpu);
        }
    }

    pub fn is_online(&self, vcpu: u32) -> bool {
        vcpu < 64 && self.online.load(Ordering::SeqCst) & (1 << vcpu) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_domain_vcpus;

    #[test]
    fn moved_shared_info_takes_legacy_vcpu_infos_along_and_events_follow() {
        let (dom, platform) = test_domain_vcpus(64, 2);
        let old = dom.shared_info_gpa();
        // vCPU 1 registered its own vcpu_info; vCPU 0 uses its legacy slot.
        dom.vcpu_info[1].store(20 * 4096 + 64, Ordering::SeqCst);
        dom.move_shared_info(9 * 4096);
        assert_eq!(dom.shared_info_gpa(), 9 * 4096);
        assert_eq!(dom.vcpu_info_gpa(0), 9 * 4096);
        assert_eq!(dom.vcpu_info_gpa(1), 20 * 4096 + 64);
        assert_ne!(old, dom.shared_info_gpa());
        // An event now lands in the new page.
        let port = dom.evtchn.lock().unwrap().bind_ipi(0).unwrap();
        dom.raise_port(port);
        let word = 9 * 4096 + shinfo::EVTCHN_PENDING + u64::from(port / 64) * 8;
        assert_ne!(dom.mem.read_u64(word).unwrap() & (1 << (port % 64)), 0);
        assert_eq!(
            dom.mem.read_u8(9 * 4096 + shinfo::UPCALL_PENDING).unwrap(),
            1
        );
        assert_eq!(*platform.kicks.lock().unwrap(), [0]);
    }
}
