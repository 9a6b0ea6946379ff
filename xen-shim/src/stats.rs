//! Monitor statistics a guest may read: the xenkvm-private CPUID leaf
//! [`STATS_LEAF`], reached only through Xen's forced-emulation prefix
//! (`ud2; .ascii "xen"; cpuid`), from guest kernel or user mode alike.
//!
//! It lets a benchmark inside the guest (tests/guests/bench/xkbench.c) count
//! the monitor exits of one operation exactly: read, run N operations, read
//! again. Exits per operation carry over between host kinds (PVM-style and
//! hardware VT-x/AMD-V KVM) where times do not.
//!
//! The leaf is answered only when the monitor enables it ([`ExitStats::set_guest_visible`],
//! `xenkvm run --stats`); otherwise it reads as zeros, like any leaf Xen does
//! not know. Subleaf (ECX):
//!
//! | ECX | EAX | EBX | ECX | EDX |
//! | --- | --- | --- | --- | --- |
//! | 0 | this vCPU's exits, bits 31:0 | bits 63:32 | the domain's exits (all vCPUs), bits 31:0 | bits 63:32 |
//! | 1 | this vCPU's hypercalls | system calls bounced to the guest kernel | exceptions (every vector, the #UD of this read too) | upcall interrupts (events delivered by interrupting the guest) |
//! | other | 0 | 0 | 0 | 0 |
//!
//! Subleaf 1 counts entries from the guest (bits 31:0; readers subtract
//! modulo 2^32). An exit is one return of KVM_RUN to the monitor, counted
//! before it is handled, so a read includes its own exit: two reads back to
//! back differ by one exit (subleaf 0) and one exception (subleaf 1). Exits
//! that are no guest entry (the monitor's own page-table replay chunks,
//! signals that interrupt KVM_RUN to deliver a timer) show in subleaf 0 only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::vcpu::PvVcpu;

/// The xenkvm statistics leaf: well away from the hypervisor leaves Xen uses
/// (0x40000000-0x400001ff, the second block with Viridian) and from KVM's
/// and Hyper-V's (0x40000000-0x400000ff). Not advertised in leaf 0x40000000.
pub const STATS_LEAF: u32 = 0x4000_f000;

/// Per-domain exit counters, one per vCPU (each written by its own vCPU
/// thread only, read by any).
#[derive(Debug)]
pub struct ExitStats {
    guest_visible: AtomicBool,
    per_vcpu: Box<[AtomicU64]>,
}

impl ExitStats {
    pub fn new(max_vcpus: u32) -> ExitStats {
        ExitStats {
            guest_visible: AtomicBool::new(false),
            per_vcpu: (0..max_vcpus).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Answer [`STATS_LEAF`] (true) or read it as zeros (false, the default).
    pub fn set_guest_visible(&self, on: bool) {
        self.guest_visible.store(on, Ordering::Relaxed);
    }

    pub fn guest_visible(&self) -> bool {
        self.guest_visible.load(Ordering::Relaxed)
    }

    /// Count one exit of vCPU `vcpu` (ignored for an id out of range).
    pub fn note_exit(&self, vcpu: u32) {
        if let Some(c) = self.per_vcpu.get(vcpu as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exits of vCPU `vcpu` so far.
    pub fn vcpu(&self, vcpu: u32) -> u64 {
        self.per_vcpu
            .get(vcpu as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Exits of all vCPUs so far.
    pub fn total(&self) -> u64 {
        self.per_vcpu
            .iter()
            .fold(0u64, |a, c| a.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// Guest entries of one vCPU by kind (what subleaf 1 reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryCounts {
    pub hypercalls: u64,
    pub syscalls: u64,
    pub exceptions: u64,
    pub interrupts: u64,
}

fn lo(x: u64) -> u32 {
    x as u32
}

fn hi(x: u64) -> u32 {
    (x >> 32) as u32
}

/// [`STATS_LEAF`] as vCPU `v` sees it, for subleaf `sub`.
pub fn leaf(v: &PvVcpu, sub: u32) -> [u32; 4] {
    let s = &v.dom.exit_stats;
    if !s.guest_visible() {
        return [0; 4];
    }
    match sub {
        0 => {
            let (me, all) = (s.vcpu(v.id), s.total());
            [lo(me), hi(me), lo(all), hi(all)]
        }
        1 => {
            let e = &v.entries;
            [
                lo(e.hypercalls),
                lo(e.syscalls),
                lo(e.exceptions),
                lo(e.interrupts),
            ]
        }
        _ => [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::Regs;
    use crate::testing::test_domain_vcpus;
    use crate::vcpu::{Action, Entry};

    const CODE_VA: u64 = 0x40_0000;

    /// vCPU 0 in guest user mode, its user root (frame 1) mapping CODE_VA to
    /// frame 8, which holds the forced-emulation CPUID.
    fn user_vcpu() -> PvVcpu {
        let (dom, _) = test_domain_vcpus(32, 2);
        let m = &*dom.mem;
        m.write_u64(0x1000, 0x2000 | 7).unwrap();
        m.write_u64(0x2000, 0x3000 | 7).unwrap();
        m.write_u64(0x3000 + 2 * 8, 0x4000 | 7).unwrap();
        m.write_u64(0x4000, 0x8000 | 5).unwrap(); // user, read-only
        m.write(0x8000, &[0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2])
            .unwrap();
        let mut v = PvVcpu::new(0, dom);
        v.kernel_mode = false;
        v.root_user = 1;
        v.root_kernel = 1;
        v
    }

    /// Execute the forced CPUID at CODE_VA as the CPU would report it (#UD).
    fn read(v: &mut PvVcpu, sub: u32) -> [u32; 4] {
        let mut regs = Regs {
            rip: CODE_VA,
            rax: u64::from(STATS_LEAF) | 0xdead_0000_0000_0000,
            rcx: u64::from(sub),
            rbx: 0x1111,
            rdx: 0x2222,
            cs: 0xe033,
            ss: 0xe02b,
            ..Default::default()
        };
        v.dom.exit_stats.note_exit(v.id); // the exit this #UD costs
        let entry = Entry::Exception {
            vector: 6,
            error: None,
            cr2: 0,
        };
        assert_eq!(v.handle(entry, &mut regs), Action::Resume);
        assert_eq!(regs.rip, CODE_VA + 7);
        assert!(!v.kernel_mode, "stays in user mode");
        [regs.rax, regs.rbx, regs.rcx, regs.rdx].map(|r| {
            assert!(r <= u64::from(u32::MAX), "upper halves cleared");
            r as u32
        })
    }

    #[test]
    fn zeros_unless_enabled() {
        let mut v = user_vcpu();
        v.dom.exit_stats.note_exit(0);
        assert_eq!(read(&mut v, 0), [0; 4]);
        assert_eq!(read(&mut v, 1), [0; 4]);
    }

    #[test]
    fn exit_counts_from_user_mode() {
        let mut v = user_vcpu();
        let s = &v.dom.exit_stats;
        s.set_guest_visible(true);
        for _ in 0..5 {
            s.note_exit(0);
        }
        for _ in 0..3 {
            s.note_exit(1);
        }
        s.note_exit(7); // no such vCPU: ignored
                        // Five earlier exits plus this read's own.
        assert_eq!(read(&mut v, 0), [6, 0, 9, 0]);
        // Back to back: one exit apart.
        assert_eq!(read(&mut v, 0), [7, 0, 10, 0]);
        // Subleaf 1: the two reads above and this one are #UD exceptions.
        v.entries.hypercalls = 0x1_0000_0004;
        v.entries.syscalls = 2;
        assert_eq!(read(&mut v, 1), [4, 2, 3, 0]);
        assert_eq!(read(&mut v, 2), [0; 4]);
        assert_eq!(read(&mut v, u32::MAX), [0; 4]);
    }

    #[test]
    fn high_words() {
        let v = user_vcpu();
        v.dom.exit_stats.set_guest_visible(true);
        v.dom.exit_stats.per_vcpu[0].store(0x0000_0002_8000_0001, Ordering::Relaxed);
        v.dom.exit_stats.per_vcpu[1].store(0x0000_0001_8000_0000, Ordering::Relaxed);
        assert_eq!(leaf(&v, 0), [0x8000_0001, 2, 1, 4]);
    }

    #[test]
    fn other_leaves_unchanged() {
        let mut v = user_vcpu();
        v.dom.exit_stats.set_guest_visible(true);
        let mut regs = Regs {
            rip: CODE_VA,
            rax: 0x4000_0000,
            ..Default::default()
        };
        assert_eq!(
            crate::emulate::forced_cpuid(&mut v, &mut regs),
            Some(Action::Resume)
        );
        assert_eq!(&(regs.rbx as u32).to_le_bytes(), b"XenV");
    }
}
