//! PVH guests (`type = "pvh"`, `xenkvm run --type pvh`) on hosts whose KVM
//! has Xen support (`KVM_CAP_XEN_HVM`, `CONFIG_KVM_XEN`): the kernel boots
//! through its `XEN_ELFNOTE_PHYS32_ENTRY` in a hardware-virtualized vCPU;
//! KVM turns its VMCALL/VMMCALL into Xen hypercalls that it handles or
//! hands to us, and the Xen core (xen-shim) and the PV backends serve it as
//! they serve PV guests.

pub mod acpi;
pub mod any;
pub mod boot;
pub mod cpuid;
pub mod hypercall;
#[cfg(test)]
mod hypercall_tests;
pub mod kvm_xen;
pub mod run;
pub mod vcpu;
pub mod vm;

use std::path::Path;

use kvm_ioctls::Kvm;

#[derive(Debug, thiserror::Error)]
pub enum PvhError {
    #[error("cannot open /dev/kvm: {0}")]
    NoKvm(kvm_ioctls::Error),
    #[error("KVM: {0}")]
    Kvm(String),
    #[error(transparent)]
    KvmXen(#[from] kvm_xen::KvmXenError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} vCPUs: PVH guests run 1 to {max} vCPUs", max = acpi::MAX_CPUS)]
    Vcpus(u32),
    #[error("{0} MiB: PVH guests have {min} MiB to 3072 MiB for now", min = crate::memory::MIN_GUEST_MIB)]
    Memory(u64),
    #[error(
        "PVH guests need KVM's Xen support, which this host's KVM lacks: \
         KVM_CAP_XEN_HVM {found} (needed: {needed}). It comes with a host kernel \
         built with CONFIG_KVM_XEN=y, Linux >= 5.12 (>= 5.19 for EVTCHN_SEND; \
         Debian 12: the bookworm-backports 6.12 kernel).{pv}"
    )]
    NoKvmXen {
        /// What the capability reports ("is absent" or the mask).
        found: String,
        needed: String,
        /// The hint for a kernel that also boots as a PV guest.
        pv: &'static str,
    },
}

/// The hint for a kernel that xenkvm also boots as a PV guest (no host
/// support needed).
const PV_HINT: &str = " This kernel also boots as a Xen PV guest, which needs no host \
     support: use type = \"pv\" in the xl.cfg (xenkvm run --type pv).";

/// Refuse with a clear message when this host's KVM cannot run a PVH guest.
/// `kernel`, if given, is checked for Xen PV notes to suggest `type = "pv"`.
pub fn check_host(kernel: Option<&Path>) -> Result<(), PvhError> {
    let kvm = Kvm::new().map_err(PvhError::NoKvm)?;
    let mask = kvm_xen::capability(&kvm);
    check_mask(mask, || {
        kernel.is_some_and(|k| crate::loader::load_pv_kernel_file(k).is_ok())
    })
}

fn check_mask(mask: u32, boots_as_pv: impl FnOnce() -> bool) -> Result<(), PvhError> {
    let missing = kvm_xen::missing(mask);
    if missing.is_empty() {
        return Ok(());
    }
    let found = if mask == 0 {
        "is absent".to_string()
    } else {
        format!("is {mask:#x}, without {}", missing.join(", "))
    };
    let needed = kvm_xen::NEEDED
        .iter()
        .map(|&(_, n)| n)
        .collect::<Vec<_>>()
        .join(", ");
    Err(PvhError::NoKvmXen {
        found,
        needed,
        pv: if boots_as_pv() { PV_HINT } else { "" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_the_capability_the_option_and_pv() {
        let e = check_mask(0, || true).unwrap_err().to_string();
        for want in [
            "KVM_CAP_XEN_HVM is absent",
            "CONFIG_KVM_XEN",
            "Linux >= 5.12",
            "type = \"pv\"",
        ] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        let e = check_mask(0x7, || false).unwrap_err().to_string();
        assert!(e.contains("is 0x7, without EVTCHN_SEND"), "{e}");
        assert!(!e.contains("type = \"pv\""), "{e}");
        assert!(check_mask(0x1ff, || unreachable!()).is_ok());
    }
}
