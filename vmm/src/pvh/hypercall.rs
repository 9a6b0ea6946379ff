//! Hypercalls of an HVM/PVH guest that KVM hands to us (KVM_EXIT_XEN).
//!
//! Most go to the Xen core's own handlers, as for a PV guest (event
//! channels, grant-table set-up, xenstore and console through the same
//! backends): guest virtual addresses in arguments are translated through
//! the guest's own page tables (its CR3; no PV MMU, no page types to
//! check). What differs for HVM is here: XENMEM_add_to_physmap (the guest
//! places shared_info in its RAM and grant frames where it likes),
//! HVMOP_{get,set}_param, the HVM feature set, and the calls whose effect
//! is KVM's (vcpu_info placement, the upcall vector, the timer port).

use xen_shim::abi::{errno::*, hc, hypercall_name, DOMID_SELF};
use xen_shim::guestva::field;
use xen_shim::vcpu::{Action, PvVcpu};

use super::boot::{PvhLayout, GRANT_FRAMES, PAGE};

/// `__HYPERVISOR_hvm_op`.
pub const HVM_OP: u64 = 34;
const HVMOP_SET_PARAM: u64 = 0;
const HVMOP_GET_PARAM: u64 = 1;
const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
const HVM_PARAM_STORE_PFN: u32 = 1;
const HVM_PARAM_STORE_EVTCHN: u32 = 2;
const HVM_PARAM_CONSOLE_PFN: u32 = 17;
const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
const XENMAPSPACE_SHARED_INFO: u32 = 0;
const XENMAPSPACE_GRANT_TABLE: u32 = 1;
const VIRQ_TIMER: u32 = 0;
/// Guest frames above this are refused (a 40-bit guest-physical space).
const MAX_GFN: u64 = (1 << 40) / PAGE;

/// XENFEAT_* an HVM guest is offered: writable_page_tables,
/// writable_descriptor_tables, auto_translated_physmap,
/// supervisor_mode_kernel, hvm_callback_vector, hvm_safe_pvclock.
pub const HVM_FEATURES: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 8) | (1 << 9);

/// What the hypercalls change in KVM.
pub trait KvmSide {
    fn set_shared_info(&mut self, gfn: u64) -> Result<(), String>;
    fn set_vcpu_info(&mut self, vcpu: u32, gpa: u64) -> Result<(), String>;
    fn set_upcall_vector(&mut self, vector: u8, long_mode: bool) -> Result<(), String>;
    fn set_timer_port(&mut self, vcpu: u32, port: u32) -> Result<(), String>;
    /// Make `vcpu` leave KVM_RUN (and so a SCHEDOP_poll KVM runs for it).
    fn kick(&mut self, vcpu: u32);
    /// Make grant frame `idx` (at `host_gpa` in the monitor's memory)
    /// appear at guest frame `gfn`, moving it from `old` if it was mapped.
    fn map_grant_frame(
        &mut self,
        idx: u32,
        old: Option<u64>,
        gfn: u64,
        host_gpa: u64,
    ) -> Result<(), String>;
}

/// The HVM state of a domain the hypercalls keep.
pub struct HvmState {
    pub layout: PvhLayout,
    pub domid: u16,
    pub callback_irq: u64,
    pub grant_gfns: Vec<Option<u64>>,
}

impl HvmState {
    pub fn new(layout: PvhLayout, domid: u16) -> HvmState {
        HvmState {
            layout,
            domid,
            callback_irq: 0,
            grant_gfns: vec![None; GRANT_FRAMES as usize],
        }
    }
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn self_domain(st: &HvmState, domid: u16) -> Result<(), i64> {
    if u64::from(domid) == DOMID_SELF || domid == st.domid {
        Ok(())
    } else {
        Err(-ESRCH)
    }
}

/// Handle hypercall `nr` with arguments `a` of vCPU `v` (whose
/// `root_kernel` is the guest's current page-table root). `long_mode`:
/// the call came from 64-bit code.
pub fn hvm_hypercall(
    v: &mut PvVcpu,
    st: &mut HvmState,
    kvm: &mut dyn KvmSide,
    nr: u64,
    a: [u64; 6],
    long_mode: bool,
) -> (i64, Action) {
    v.dom.count_hypercall(if nr == HVM_OP {
        "hvm_op"
    } else {
        hypercall_name(nr)
    });
    let r = |x: Result<i64, i64>| (x.unwrap_or_else(|e| e), Action::Resume);
    if !long_mode {
        v.dom.log_once("pvh 32-bit hypercall", nr, || {
            format!("32-bit hypercall {nr} from a PVH guest -> -ENOSYS")
        });
        return r(Err(-ENOSYS));
    }
    match nr {
        HVM_OP => r(hvm_op(v, st, kvm, a[0], a[1], long_mode)),
        hc::MEMORY_OP if a[0] & 0xf_ffff == XENMEM_ADD_TO_PHYSMAP => {
            r(add_to_physmap(v, st, kvm, a[1]))
        }
        // Ballooning and the PV memory map are not for this guest yet.
        hc::MEMORY_OP if matches!(a[0] & 0xf_ffff, 0 | 1 | 6 | 9 | 12) => r(Err(-ENOSYS)),
        hc::MEMORY_OP => xen_shim::hypercall::dispatch(v, nr, a, false),
        hc::XEN_VERSION if a[0] == 6 => r(get_features(v, a[1])),
        hc::XEN_VERSION | hc::GRANT_TABLE_OP | hc::CONSOLE_IO | hc::VM_ASSIST | hc::SCHED_OP => {
            let (ret, action) = xen_shim::hypercall::dispatch(v, nr, a, false);
            // The vCPU halts with HLT in KVM; a block or poll is a
            // spurious wake-up, which the guest tolerates.
            let action = match action {
                Action::Block | Action::Yield | Action::Poll { .. } => Action::Resume,
                other => other,
            };
            (ret, action)
        }
        hc::EVENT_CHANNEL_OP => r(event_channel_op(v, kvm, a[0], a[1])),
        hc::VCPU_OP => vcpu_op(v, kvm, a),
        hc::SET_TIMER_OP => {
            v.dom.log_once("pvh set_timer_op", 0, || {
                "set_timer_op reached the monitor (no timer port yet) -> ignored".into()
            });
            r(Ok(0))
        }
        _ => {
            v.dom.log_once("pvh unimplemented hypercall", nr, || {
                format!(
                    "unimplemented PVH hypercall {} ({nr}) -> -ENOSYS",
                    hypercall_name(nr)
                )
            });
            r(Err(-ENOSYS))
        }
    }
}

fn get_features(v: &mut PvVcpu, arg: u64) -> Result<i64, i64> {
    let idx = v.read_u32(arg)?;
    let feats = if idx == 0 { HVM_FEATURES } else { 0 };
    v.copy_to(field(arg, 4)?, &feats.to_le_bytes())?;
    Ok(0)
}

fn hvm_op(
    v: &mut PvVcpu,
    st: &mut HvmState,
    kvm: &mut dyn KvmSide,
    cmd: u64,
    arg: u64,
    long_mode: bool,
) -> Result<i64, i64> {
    match cmd {
        HVMOP_SET_PARAM | HVMOP_GET_PARAM => {
            // xen_hvm_param {u16 domid, u16 pad, u32 index, u64 value}
            let mut b = [0u8; 16];
            v.copy_from(arg, &mut b)?;
            self_domain(st, le_u16(&b))?;
            let index = le_u32(&b[4..]);
            if cmd == HVMOP_GET_PARAM {
                let value = get_param(st, index)?;
                v.copy_to(field(arg, 8)?, &value.to_le_bytes())?;
                return Ok(0);
            }
            set_param(v, st, kvm, index, le_u64(&b[8..]), long_mode)
        }
        _ => {
            v.dom.log_once("pvh hvm_op", cmd, || {
                format!("unimplemented hvm_op {cmd} -> -ENOSYS")
            });
            Err(-ENOSYS)
        }
    }
}

fn get_param(st: &HvmState, index: u32) -> Result<u64, i64> {
    let l = &st.layout;
    Ok(match index {
        HVM_PARAM_CALLBACK_IRQ => st.callback_irq,
        HVM_PARAM_STORE_PFN => l.store_gpa / PAGE,
        HVM_PARAM_STORE_EVTCHN => u64::from(super::vm::STORE_PORT),
        HVM_PARAM_CONSOLE_PFN => l.console_gpa / PAGE,
        HVM_PARAM_CONSOLE_EVTCHN => u64::from(super::vm::CONSOLE_PORT),
        _ => return Err(-EINVAL),
    })
}

fn set_param(
    v: &mut PvVcpu,
    st: &mut HvmState,
    kvm: &mut dyn KvmSide,
    index: u32,
    value: u64,
    long_mode: bool,
) -> Result<i64, i64> {
    if index != HVM_PARAM_CALLBACK_IRQ {
        v.dom.log_once("pvh set_param", u64::from(index), || {
            format!("HVMOP_set_param of parameter {index} -> -EINVAL")
        });
        return Err(-EINVAL);
    }
    // Bits 63:56 the type: 2 is a vector (XENFEAT_hvm_callback_vector);
    // GSI and PCI INTx lines are not wired here.
    let vector = match (value >> 56, value) {
        (_, 0) => 0,
        (2, _) if (0x10..=0xff).contains(&(value & 0xff)) && value >> 8 & 0xffff_ffff_ffff == 0 => {
            (value & 0xff) as u8
        }
        (2, _) => return Err(-EINVAL),
        _ => {
            v.dom.log_once("pvh callback type", value >> 56, || {
                format!(
                    "callback via type {} is not offered -> -ENOSYS",
                    value >> 56
                )
            });
            return Err(-ENOSYS);
        }
    };
    kvm.set_upcall_vector(vector, long_mode)
        .map_err(|e| kvm_failed(v, &e))?;
    st.callback_irq = value;
    Ok(0)
}

fn kvm_failed(v: &PvVcpu, e: &str) -> i64 {
    v.dom
        .log_once("pvh kvm attr", 0, || format!("KVM refused: {e}"));
    -EINVAL
}

fn add_to_physmap(
    v: &mut PvVcpu,
    st: &mut HvmState,
    kvm: &mut dyn KvmSide,
    arg: u64,
) -> Result<i64, i64> {
    // xen_add_to_physmap {u16 domid, u16 size, u32 space, u64 idx, u64 gpfn}
    let mut b = [0u8; 24];
    v.copy_from(arg, &mut b)?;
    self_domain(st, le_u16(&b))?;
    let space = le_u32(&b[4..]);
    let idx = le_u64(&b[8..]);
    let gfn = le_u64(&b[16..]);
    let ram_frames = st.layout.ram / PAGE;
    match space {
        XENMAPSPACE_SHARED_INFO => {
            // In the guest's RAM, as Linux places it (its own page then).
            if idx != 0 || gfn == 0 || gfn >= ram_frames {
                return Err(-EINVAL);
            }
            let gpa = gfn * PAGE;
            v.dom.mem.write(gpa, &[0u8; 4096]).map_err(|_| -EFAULT)?;
            kvm.set_shared_info(gfn).map_err(|e| kvm_failed(v, &e))?;
            v.dom.move_shared_info(gpa);
            for i in 0..v.dom.layout.max_vcpus {
                kvm.set_vcpu_info(i, v.dom.vcpu_info_gpa(i))
                    .map_err(|e| kvm_failed(v, &e))?;
            }
            Ok(0)
        }
        XENMAPSPACE_GRANT_TABLE => {
            // v1 frames only (no status frames), outside what the guest
            // has: its RAM and the special pages.
            if idx >= u64::from(GRANT_FRAMES) || gfn < st.layout.end / PAGE || gfn >= MAX_GFN {
                return Err(-EINVAL);
            }
            let i = idx as usize;
            if st
                .grant_gfns
                .iter()
                .enumerate()
                .any(|(j, g)| j != i && *g == Some(gfn))
            {
                return Err(-EINVAL);
            }
            let old = st.grant_gfns[i];
            if old == Some(gfn) {
                return Ok(0);
            }
            let host = st.layout.grant_gpa + idx * PAGE;
            kvm.map_grant_frame(idx as u32, old, gfn, host)
                .map_err(|e| kvm_failed(v, &e))?;
            st.grant_gfns[i] = Some(gfn);
            Ok(0)
        }
        _ => Err(-EINVAL),
    }
}

fn event_channel_op(v: &mut PvVcpu, kvm: &mut dyn KvmSide, cmd: u64, arg: u64) -> Result<i64, i64> {
    let (ret, _) =
        xen_shim::hypercall::dispatch(v, hc::EVENT_CHANNEL_OP, [cmd, arg, 0, 0, 0, 0], false);
    if ret < 0 {
        return Err(ret);
    }
    // EVTCHNOP_send {u32 port}: the vCPU the port is bound to may wait for
    // it in a SCHEDOP_poll that KVM runs (a PV spinlock), masked: the Xen
    // core does not kick for a masked port, and KVM does not know ours.
    if cmd == 4 {
        let port = v.read_u32(arg)?;
        let to = v
            .dom
            .evtchn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .vcpu_of(port);
        if let Some(t) = to.filter(|&t| t != v.id) {
            kvm.kick(t);
        }
    }
    // EVTCHNOP_bind_virq {u32 virq, u32 vcpu, OUT u32 port}: KVM runs the
    // timer of VIRQ_TIMER's port itself.
    if cmd == 1 {
        let mut b = [0u8; 12];
        v.copy_from(arg, &mut b)?;
        if le_u32(&b) == VIRQ_TIMER {
            kvm.set_timer_port(le_u32(&b[4..]), le_u32(&b[8..]))
                .map_err(|e| kvm_failed(v, &e))?;
        }
    }
    Ok(ret)
}

fn vcpu_op(v: &mut PvVcpu, kvm: &mut dyn KvmSide, a: [u64; 6]) -> (i64, Action) {
    let (cmd, vcpu) = (a[0], a[1]);
    match cmd {
        // register_runstate_memory_area: accepted, not kept up to date
        // (the guest reads "running" and no steal time).
        5 => (0, Action::Resume),
        // register_vcpu_time_memory_area: not offered (the vDSO reads
        // the clock from vcpu_info).
        13 => (-ENOSYS, Action::Resume),
        // initialise/up/down: Linux brings HVM vCPUs up through the APIC.
        0..=2 => (-ENOSYS, Action::Resume),
        _ => {
            let (ret, action) = xen_shim::hypercall::dispatch(v, hc::VCPU_OP, a, false);
            if cmd == 10 && ret == 0 {
                let gpa = v.dom.vcpu_info_gpa(vcpu as u32);
                if let Err(e) = kvm.set_vcpu_info(vcpu as u32, gpa) {
                    return (kvm_failed(v, &e), Action::Resume);
                }
            }
            let action = match action {
                Action::Block | Action::Yield | Action::Poll { .. } => Action::Resume,
                other => other,
            };
            (ret, action)
        }
    }
}
