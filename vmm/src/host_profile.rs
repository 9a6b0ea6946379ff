//! Which kind of KVM runs below us, found by a probe, and what that means
//! for the ring-0 area and the exit path. Everything that differs between
//! host kinds is decided here, nowhere else.
//!
//! Two kinds are known:
//! - **hardware**: Intel VT-x or AMD-V. Guest ring 0 runs natively. SYSCALL
//!   from ring 3 enters LSTAR in ring 0, still on the guest's stack. At an
//!   `out` exit KVM reports the RIP of the `out` itself and steps past it on
//!   the next KVM_RUN (unless the monitor has set a new RIP).
//! - **PVM-style**: guest ring 0 is emulated by the host. SYSCALL enters
//!   LSTAR without leaving ring 3, and the RIP at an `out` exit is already
//!   past the instruction.
//!
//! The probe runs those two instructions in a throwaway VM built like a
//! guest's (the same ring-0 area, permissive options) and reads the answer
//! off the vCPU; host CPU flags and loaded modules are only reported.

use std::sync::OnceLock;
use std::time::Instant;

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd};
use xen_shim::abi::{pte, FLAT_RING3_CS64, FLAT_RING3_SS};
use xen_shim::mem::GuestMem;

use crate::layout::*;
use crate::memory::Memory;
use crate::ring0::{self, Ring0Opts};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("host probe: {what}: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("host probe: {0}")]
    Setup(String),
    #[error("host probe: unknown KVM behaviour ({0}); neither a hardware (VT-x/AMD-V) nor a PVM-style host")]
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Hardware,
    Pvm,
}

/// The probed host and the choices that follow from it.
#[derive(Debug, Clone)]
pub struct HostProfile {
    pub kind: HostKind,
    /// How far past the `out` instruction the RIP KVM reports at an `out`
    /// exit is (2 on PVM-style hosts, 0 on hardware).
    pub out_rip_skew: u64,
    /// The privilege level the SYSCALL stub runs at.
    pub syscall_cpl: u8,
    /// Registers travel in `kvm_run` (KVM_CAP_SYNC_REGS with general and
    /// special registers and events, seen to work by the probe): an exit
    /// then costs one ioctl.
    pub sync_regs: bool,
    /// The iret and singleshot-timer hypercalls are done in ring 0 without
    /// an exit (hardware hosts; crate::ring0_fast). XENKVM_FAST_PATHS=0
    /// turns them off (for A/B measurements).
    pub fast_paths: bool,
    /// The median KVM_RUN round trip to an `out` exit, in nanoseconds.
    pub exit_ns: u64,
    /// What the probe saw, for `xenkvm info` and `-v`.
    pub evidence: Vec<String>,
}

impl HostProfile {
    /// How late a vCPU's timer may fire while the vCPU runs guest code
    /// before the timer thread kicks it out. A kick costs two exits (the
    /// kick and the upcall); within the slop the event instead rides the
    /// next exit the guest makes anyway, and is delivered there at no extra
    /// cost. Ten exits' worth, from Xen's default timer slop (50 us) up to
    /// 1 ms (a 250 Hz tick is 4 ms): on a host where exits cost 1 ms
    /// (nested, emulated) ticks alone would otherwise need most of the CPU.
    pub fn timer_slop_ns(&self) -> u64 {
        self.exit_ns.saturating_mul(10).clamp(50_000, 1_000_000)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            HostKind::Hardware => "hardware",
            HostKind::Pvm => "pvm",
        }
    }

    /// How the ring-0 area is built on this host for a domain of `vcpus`
    /// (the same for any number: kept as the one place to decide it).
    pub fn ring0_for(&self, _vcpus: u32) -> Ring0Opts {
        self.ring0()
    }

    /// How the ring-0 area is built on this host.
    pub fn ring0(&self) -> Ring0Opts {
        match self.kind {
            HostKind::Hardware => Ring0Opts {
                syscall_stub_in_ring3: false,
                ist: true,
                fast_paths: self.fast_paths,
            },
            HostKind::Pvm => Ring0Opts {
                syscall_stub_in_ring3: true,
                ist: false,
                fast_paths: false,
            },
        }
    }

    /// One line saying which profile runs and why.
    pub fn summary(&self) -> String {
        format!("{} ({})", self.name(), self.evidence.join("; "))
    }

    /// The RIP of the `out` instruction that caused an exit at `rip`.
    pub fn out_insn(&self, rip: u64) -> u64 {
        rip.wrapping_sub(self.out_rip_skew)
    }

    /// Classify what the probe observed.
    fn classify(out_rip_skew: u64, syscall_cpl: u8) -> Result<HostKind, ProbeError> {
        match (out_rip_skew, syscall_cpl) {
            (0, 0) => Ok(HostKind::Hardware),
            (2, 3) => Ok(HostKind::Pvm),
            (skew, cpl) => Err(ProbeError::Unknown(format!(
                "RIP {skew} bytes past an `out` at its exit, SYSCALL entered at CPL {cpl}"
            ))),
        }
    }
}

static PROFILE: OnceLock<Result<HostProfile, String>> = OnceLock::new();

/// The host profile, probed once per process.
pub fn get(kvm: &Kvm) -> Result<&'static HostProfile, String> {
    PROFILE
        .get_or_init(|| {
            let p = probe(kvm).map_err(|e| e.to_string())?;
            log::info!("host profile: {}", p.summary());
            Ok(p)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Probe round trips used for the exit-cost figure.
const ROUND_TRIPS: usize = 5;

fn kerr(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> ProbeError {
    move |err| ProbeError::Kvm { what, err }
}

fn setup<E: std::fmt::Display>(e: E) -> ProbeError {
    ProbeError::Setup(e.to_string())
}

/// Run `syscall` from ring 3 into the SYSCALL stub (`out %al, $0xf0`) and
/// look at where the vCPU stands at the exit.
pub fn probe(kvm: &Kvm) -> Result<HostProfile, ProbeError> {
    let ram = 2 << 20;
    let l = MonitorLayout::new(ram);
    let mem = Memory::new(l.end).map_err(setup)?;
    let vm = kvm.create_vm().map_err(kerr("KVM_CREATE_VM"))?;
    // SAFETY: `mem` is declared before `vm`, so it is dropped after it and
    // the mapping outlives the VM.
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: l.end,
            userspace_addr: mem.host_base() as u64,
        })
        .map_err(kerr("KVM_SET_USER_MEMORY_REGION"))?;
    }
    let permissive = Ring0Opts {
        syscall_stub_in_ring3: true,
        ist: false,
        fast_paths: false,
    };
    let slots = ring0::build(&mem, &l, 1, permissive).map_err(setup)?;
    // The probe's L4 at guest frame 0: only the reserved slots.
    for (i, e) in slots.iter().enumerate() {
        if *e & pte::P != 0 {
            mem.write_u64((256 + i as u64) * 8, *e).map_err(setup)?;
        }
    }
    let mut fd = vm.create_vcpu(0).map_err(kerr("KVM_CREATE_VCPU"))?;
    let sync_cap = kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs);
    let sync_offered =
        sync_cap > 0 && (sync_cap as u32) & crate::kvm_regs::NEEDED == crate::kvm_regs::NEEDED;
    if sync_offered {
        fd.set_sync_valid_reg(SyncReg::Register);
        fd.set_sync_valid_reg(SyncReg::SystemRegister);
        fd.set_sync_valid_reg(SyncReg::VcpuEvents);
    }
    let msrs: Vec<kvm_msr_entry> = ring0::syscall_msrs(0, permissive)
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&msrs).map_err(|e| ProbeError::Setup(format!("{e:?}")))?;
    fd.set_msrs(&msrs).map_err(kerr("KVM_SET_MSRS"))?;
    let mut s = fd.get_sregs().map_err(kerr("KVM_GET_SREGS"))?;
    crate::vcpu::base_sregs(&mut s, 0);
    let seg = |sel: u16| -> Result<kvm_segment, ProbeError> {
        xen_shim::descriptors::reserved_descriptor(sel)
            .map(|d| crate::vcpu::seg_from_desc(sel, d))
            .ok_or_else(|| ProbeError::Setup(format!("no descriptor for {sel:#x}")))
    };
    s.cs = seg(FLAT_RING3_CS64)?;
    s.ss = seg(FLAT_RING3_SS)?;
    s.cr3 = 0;
    fd.set_sregs(&s).map_err(kerr("KVM_SET_SREGS"))?;
    let stubs = MonitorLayout::r0_va(R0_STUBS);
    let start = kvm_regs {
        rip: stubs + STUB_PROBE_OFF,
        rsp: ram - 64,
        rflags: 0x2,
        ..Default::default()
    };
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    let mut seen = None;
    let mut sync_ok = sync_offered;
    for _ in 0..ROUND_TRIPS {
        fd.set_regs(&start).map_err(kerr("KVM_SET_REGS"))?;
        fd.set_sregs(&s).map_err(kerr("KVM_SET_SREGS"))?;
        let t = Instant::now();
        let port = run_to_out(&mut fd)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if port != PORT_SYSCALL {
            return Err(ProbeError::Unknown(format!(
                "SYSCALL into the stub exited on port {port:#x}"
            )));
        }
        let r = fd.get_regs().map_err(kerr("KVM_GET_REGS"))?;
        let rs = fd.get_sregs().map_err(kerr("KVM_GET_SREGS"))?;
        if sync_offered {
            // The copy in kvm_run must be what the ioctls say.
            let area = fd.sync_regs();
            sync_ok &= area.regs.rip == r.rip
                && area.regs.rcx == r.rcx
                && area.sregs.cs.selector == rs.cs.selector
                && area.sregs.cr3 == rs.cr3;
        }
        let skew = r.rip.wrapping_sub(stubs + STUB_SYSCALL_OFF);
        if r.rcx != start.rip + 2 {
            return Err(ProbeError::Unknown(format!(
                "SYSCALL left RCX {:#x}, expected {:#x}",
                r.rcx,
                start.rip + 2
            )));
        }
        seen = Some((skew, rs.cs.dpl));
    }
    let (skew, cpl) = seen.ok_or_else(|| ProbeError::Setup("no probe run".into()))?;
    let kind = HostProfile::classify(skew, cpl)?;
    times.sort_by(f64::total_cmp);
    let exit_us = times[times.len() / 2];
    let mut evidence = vec![
        format!("SYSCALL from ring 3 entered the stub at CPL {cpl}"),
        if skew == 0 {
            "RIP at an `out` exit is the `out` itself".to_string()
        } else {
            format!("RIP at an `out` exit is {skew} bytes past it")
        },
        format!("exit round trip {exit_us:.1} us"),
        match (sync_offered, sync_ok) {
            (true, true) => "registers travel in kvm_run (KVM_CAP_SYNC_REGS)".to_string(),
            (true, false) => {
                "KVM_CAP_SYNC_REGS offered but its copy disagreed: register ioctls".to_string()
            }
            (false, _) => format!("no usable KVM_CAP_SYNC_REGS ({sync_cap:#x}): register ioctls"),
        },
    ];
    // A/B switch for benchmarks: XENKVM_SYNC_REGS=0 keeps the ioctls.
    let sync_disabled = std::env::var("XENKVM_SYNC_REGS").is_ok_and(|v| v == "0");
    if sync_disabled {
        evidence.push("sync regs turned off by XENKVM_SYNC_REGS=0".into());
    }
    let fast_disabled = std::env::var("XENKVM_FAST_PATHS").is_ok_and(|v| v == "0");
    if kind == HostKind::Hardware {
        evidence.push(if fast_disabled {
            "ring-0 fast paths turned off by XENKVM_FAST_PATHS=0".into()
        } else {
            "iret and timer hypercalls handled in ring 0".into()
        });
    }
    evidence.extend(host_facts());
    Ok(HostProfile {
        kind,
        out_rip_skew: skew,
        syscall_cpl: cpl,
        sync_regs: sync_offered && sync_ok && !sync_disabled,
        fast_paths: kind == HostKind::Hardware && !fast_disabled,
        exit_ns: (exit_us * 1000.0) as u64,
        evidence,
    })
}

/// KVM_RUN until an `out` (an `in` reads all ones); the port.
fn run_to_out(fd: &mut VcpuFd) -> Result<u16, ProbeError> {
    for _ in 0..16 {
        match fd.run() {
            Ok(VcpuExit::IoOut(port, _)) => return Ok(port),
            Ok(VcpuExit::IoIn(_, data)) => data.iter_mut().for_each(|b| *b = 0xff),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Ok(other) => {
                return Err(ProbeError::Unknown(format!(
                    "unexpected exit {other:?} running the probe"
                )))
            }
            Err(e) => return Err(kerr("KVM_RUN")(e)),
        }
    }
    Err(ProbeError::Unknown(
        "the probe never reached its `out`".into(),
    ))
}

/// Host facts that support the probe's answer (reported, never decisive).
fn host_facts() -> Vec<String> {
    let mut v = Vec::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    v.push(
        match (has("vmx"), has("svm")) {
            (true, _) => "host CPU has vmx",
            (_, true) => "host CPU has svm",
            _ => "host CPU has neither vmx nor svm",
        }
        .to_string(),
    );
    for m in ["kvm_intel", "kvm_amd", "kvm_pvm"] {
        if std::path::Path::new("/sys/module").join(m).exists() {
            v.push(format!("module {m} loaded"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_two_known_hosts_and_refuses_others() {
        assert_eq!(HostProfile::classify(0, 0).unwrap(), HostKind::Hardware);
        assert_eq!(HostProfile::classify(2, 3).unwrap(), HostKind::Pvm);
        assert!(HostProfile::classify(2, 0).is_err());
        assert!(HostProfile::classify(0, 3).is_err());
    }

    #[test]
    fn hardware_keeps_the_stub_away_from_ring_3() {
        let p = HostProfile {
            kind: HostKind::Hardware,
            out_rip_skew: 0,
            syscall_cpl: 0,
            sync_regs: true,
            fast_paths: true,
            exit_ns: 3_000,
            evidence: vec![],
        };
        assert_eq!(p.timer_slop_ns(), 50_000);
        assert_eq!(
            HostProfile {
                exit_ns: 92_000,
                ..p.clone()
            }
            .timer_slop_ns(),
            920_000
        );
        assert_eq!(
            HostProfile {
                exit_ns: 900_000,
                ..p.clone()
            }
            .timer_slop_ns(),
            1_000_000
        );
        assert!(!p.ring0().syscall_stub_in_ring3);
        assert!(p.ring0().ist);
        assert_eq!(p.out_insn(0x1000), 0x1000);
        let pvm = HostProfile {
            kind: HostKind::Pvm,
            out_rip_skew: 2,
            ..p
        };
        assert!(pvm.ring0().syscall_stub_in_ring3);
        assert_eq!(pvm.out_insn(0x1002), 0x1000);
    }
}
