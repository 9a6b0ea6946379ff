//! KVM's Xen support (`CONFIG_KVM_XEN`): the capability check and the
//! Xen ioctls, which kvm-ioctls does not wrap (numbers from `linux/kvm.h`).

use std::os::fd::AsRawFd;

use kvm_bindings::{
    kvm_xen_hvm_attr, kvm_xen_hvm_config, kvm_xen_vcpu_attr, KVM_XEN_HVM_CONFIG_EVTCHN_SEND,
    KVM_XEN_HVM_CONFIG_HYPERCALL_MSR, KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL,
    KVM_XEN_HVM_CONFIG_SHARED_INFO,
};
use kvm_ioctls::{Cap, Kvm};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

ioctl_iow_nr!(
    KVM_XEN_HVM_CONFIG,
    kvm_bindings::KVMIO,
    0x7a,
    kvm_xen_hvm_config
);
ioctl_iow_nr!(
    KVM_XEN_HVM_SET_ATTR,
    kvm_bindings::KVMIO,
    0xc9,
    kvm_xen_hvm_attr
);
ioctl_iow_nr!(
    KVM_XEN_VCPU_SET_ATTR,
    kvm_bindings::KVMIO,
    0xcb,
    kvm_xen_vcpu_attr
);

/// `KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL` (`(__u32)(-1)`, which bindgen leaves out).
pub const PRIO_2LEVEL: u32 = u32::MAX;

/// The Xen hypercall MSR (CPUID 0x40000002 EBX), as Xen uses it.
pub const HYPERCALL_MSR: u32 = 0x4000_0000;

/// What xenkvm needs of `KVM_CAP_XEN_HVM`, each with its name in `linux/kvm.h`.
pub const NEEDED: [(u32, &str); 4] = [
    (KVM_XEN_HVM_CONFIG_HYPERCALL_MSR, "HYPERCALL_MSR"),
    (KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL, "INTERCEPT_HCALL"),
    (KVM_XEN_HVM_CONFIG_SHARED_INFO, "SHARED_INFO"),
    (KVM_XEN_HVM_CONFIG_EVTCHN_SEND, "EVTCHN_SEND"),
];

#[derive(Debug, thiserror::Error)]
pub enum KvmXenError {
    #[error("{what}: {source}")]
    Ioctl {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The host's `KVM_CHECK_EXTENSION(KVM_CAP_XEN_HVM)` mask (0 without `CONFIG_KVM_XEN`).
pub fn capability(kvm: &Kvm) -> u32 {
    kvm.check_extension_int(Cap::XenHvm).max(0) as u32
}

/// The names of the flags of [`NEEDED`] missing from `mask`.
pub fn missing(mask: u32) -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(bit, _)| mask & bit == 0)
        .map(|&(_, name)| name)
        .collect()
}

fn check(what: &'static str, rc: i32) -> Result<(), KvmXenError> {
    if rc < 0 {
        return Err(KvmXenError::Ioctl {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `KVM_XEN_HVM_CONFIG`: every VMCALL/VMMCALL becomes a Xen hypercall that
/// KVM handles or hands to us (`KVM_EXIT_XEN`); EVTCHN_SEND lets KVM do
/// `EVTCHNOP_send` to ports it knows, timers and `SCHEDOP_poll` itself.
pub fn hvm_config(vm: &impl AsRawFd) -> Result<(), KvmXenError> {
    let cfg = kvm_xen_hvm_config {
        flags: KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL | KVM_XEN_HVM_CONFIG_EVTCHN_SEND,
        msr: HYPERCALL_MSR,
        ..Default::default()
    };
    // SAFETY: our VM fd and a valid kvm_xen_hvm_config, read by the kernel.
    check("KVM_XEN_HVM_CONFIG", unsafe {
        ioctl_with_ref(vm, KVM_XEN_HVM_CONFIG(), &cfg)
    })
}

fn hvm_attr(type_: u32) -> kvm_xen_hvm_attr {
    // SAFETY: a plain C struct of integers: all-zero is valid.
    let mut a: kvm_xen_hvm_attr = unsafe { std::mem::zeroed() };
    a.type_ = type_ as u16;
    a
}

fn set_hvm_attr(
    vm: &impl AsRawFd,
    what: &'static str,
    a: &kvm_xen_hvm_attr,
) -> Result<(), KvmXenError> {
    // SAFETY: our VM fd and a valid attribute, read by the kernel.
    check(what, unsafe {
        ioctl_with_ref(vm, KVM_XEN_HVM_SET_ATTR(), a)
    })
}

/// VM attribute LONG_MODE: shared_info and vcpu_info in the 64-bit layout.
pub fn set_long_mode(vm: &impl AsRawFd, long: bool) -> Result<(), KvmXenError> {
    let mut a = hvm_attr(kvm_bindings::KVM_XEN_ATTR_TYPE_LONG_MODE);
    a.u.long_mode = long as u8;
    set_hvm_attr(vm, "KVM_XEN_ATTR_TYPE_LONG_MODE", &a)
}

/// VM attribute SHARED_INFO: the guest frame of shared_info (KVM writes
/// the wallclock there and reads the event bitmaps).
pub fn set_shared_info(vm: &impl AsRawFd, gfn: u64) -> Result<(), KvmXenError> {
    let mut a = hvm_attr(kvm_bindings::KVM_XEN_ATTR_TYPE_SHARED_INFO);
    a.u.shared_info.gfn = gfn;
    set_hvm_attr(vm, "KVM_XEN_ATTR_TYPE_SHARED_INFO", &a)
}

/// VM attribute UPCALL_VECTOR: the global callback vector (0: none).
pub fn set_upcall_vector(vm: &impl AsRawFd, vector: u8) -> Result<(), KvmXenError> {
    let mut a = hvm_attr(kvm_bindings::KVM_XEN_ATTR_TYPE_UPCALL_VECTOR);
    a.u.vector = vector;
    set_hvm_attr(vm, "KVM_XEN_ATTR_TYPE_UPCALL_VECTOR", &a)
}

fn vcpu_attr(type_: u32) -> kvm_xen_vcpu_attr {
    // SAFETY: a plain C struct of integers: all-zero is valid.
    let mut a: kvm_xen_vcpu_attr = unsafe { std::mem::zeroed() };
    a.type_ = type_ as u16;
    a
}

fn set_vcpu_attr(
    vcpu: &impl AsRawFd,
    what: &'static str,
    a: &kvm_xen_vcpu_attr,
) -> Result<(), KvmXenError> {
    // SAFETY: our vCPU fd and a valid attribute, read by the kernel.
    check(what, unsafe {
        ioctl_with_ref(vcpu, KVM_XEN_VCPU_SET_ATTR(), a)
    })
}

/// vCPU attribute VCPU_ID: the Xen vCPU id hypercalls name it by.
pub fn set_vcpu_id(vcpu: &impl AsRawFd, id: u32) -> Result<(), KvmXenError> {
    let mut a = vcpu_attr(kvm_bindings::KVM_XEN_VCPU_ATTR_TYPE_VCPU_ID);
    a.u.vcpu_id = id;
    set_vcpu_attr(vcpu, "KVM_XEN_VCPU_ATTR_TYPE_VCPU_ID", &a)
}

/// vCPU attribute VCPU_INFO: where the vCPU's vcpu_info is (guest-physical).
pub fn set_vcpu_info(vcpu: &impl AsRawFd, gpa: u64) -> Result<(), KvmXenError> {
    let mut a = vcpu_attr(kvm_bindings::KVM_XEN_VCPU_ATTR_TYPE_VCPU_INFO);
    a.u.gpa = gpa;
    set_vcpu_attr(vcpu, "KVM_XEN_VCPU_ATTR_TYPE_VCPU_INFO", &a)
}

/// vCPU attribute TIMER: the port of VIRQ_TIMER; KVM then runs the
/// single-shot timer hypercalls and raises the port itself.
pub fn set_timer_port(vcpu: &impl AsRawFd, port: u32) -> Result<(), KvmXenError> {
    let mut a = vcpu_attr(kvm_bindings::KVM_XEN_VCPU_ATTR_TYPE_TIMER);
    a.u.timer.port = port;
    a.u.timer.priority = PRIO_2LEVEL;
    set_vcpu_attr(vcpu, "KVM_XEN_VCPU_ATTR_TYPE_TIMER", &a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_each_absent_flag() {
        assert_eq!(
            missing(0),
            [
                "HYPERCALL_MSR",
                "INTERCEPT_HCALL",
                "SHARED_INFO",
                "EVTCHN_SEND"
            ]
        );
        assert!(missing(0x1ff).is_empty());
        // A 5.12-5.18 kernel: no EVTCHN_SEND.
        assert_eq!(missing(0x7), ["EVTCHN_SEND"]);
    }

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(KVM_XEN_HVM_CONFIG(), 0x4038_ae7a);
        assert_eq!(KVM_XEN_HVM_SET_ATTR(), 0x4048_aec9);
        assert_eq!(KVM_XEN_VCPU_SET_ATTR(), 0x4048_aecb);
    }
}
