//! The CPUID a PVH guest sees: the host's (as KVM supports it) with the
//! hypervisor bit, and Xen's leaves at 0x40000000 in place of KVM's, so
//! that Linux finds Xen (the largest base wins: no KVM leaves at all).

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use super::kvm_xen::HYPERCALL_MSR;

const BASE: u32 = 0x4000_0000;
/// "XenVMMXenVMM" in EBX, ECX, EDX.
const SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
/// Leaf base+4 EAX: the vCPU id is in EBX, the domain id in ECX.
const VCPU_ID_PRESENT: u32 = 1 << 3;
const DOMID_PRESENT: u32 = 1 << 4;

fn leaf(function: u32, index: u32, indexed: bool, r: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: if indexed {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: r[0],
        ebx: r[1],
        ecx: r[2],
        edx: r[3],
        ..Default::default()
    }
}

/// `host` (KVM_GET_SUPPORTED_CPUID) made the table of vCPU `vcpu` of domain
/// `domid`; `tsc_khz` is the guest's TSC frequency.
pub fn pvh_cpuid(
    host: &[kvm_cpuid_entry2],
    vcpu: u32,
    domid: u16,
    tsc_khz: u32,
) -> Vec<kvm_cpuid_entry2> {
    let mut out: Vec<kvm_cpuid_entry2> = host
        .iter()
        .filter(|e| !(BASE..BASE + 0x1_0000).contains(&e.function))
        .copied()
        .collect();
    for e in out.iter_mut() {
        if e.function == 1 {
            e.ecx |= 1 << 31; // a hypervisor is present
            e.ebx = (e.ebx & 0x00ff_ffff) | (vcpu << 24); // initial APIC id
        }
        if e.function == 0xb || e.function == 0x1f {
            e.edx = vcpu; // x2APIC id
        }
    }
    let version = (xen_shim::abi::XEN_MAJOR << 16) | xen_shim::abi::XEN_MINOR;
    out.push(leaf(
        BASE,
        0,
        false,
        [BASE + 4, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]],
    ));
    out.push(leaf(BASE + 1, 0, false, [version, 0, 0, 0]));
    // One hypercall page, installed through the MSR (KVM writes it).
    out.push(leaf(BASE + 2, 0, false, [1, HYPERCALL_MSR, 0, 0]));
    // Time: the TSC is not emulated; KVM fills sub-leaves 1 and 2 itself.
    out.push(leaf(BASE + 3, 0, true, [0, 0, tsc_khz, 0]));
    out.push(leaf(BASE + 3, 1, true, [0; 4]));
    out.push(leaf(BASE + 3, 2, true, [tsc_khz, 0, 0, 0]));
    out.push(leaf(
        BASE + 4,
        0,
        true,
        [VCPU_ID_PRESENT | DOMID_PRESENT, vcpu, u32::from(domid), 0],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_leaves_replace_kvm_leaves() {
        let host = [
            leaf(1, 0, false, [0, 0x0100_0800, 0, 0]),
            leaf(BASE, 0, false, [BASE + 1, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
            leaf(BASE + 1, 0, false, [0xffff, 0, 0, 0]),
        ];
        let t = pvh_cpuid(&host, 0, 7, 2_000_000);
        let get = |f: u32, i: u32| {
            let e = t.iter().find(|e| e.function == f && e.index == i).unwrap();
            [e.eax, e.ebx, e.ecx, e.edx]
        };
        assert_eq!(t.iter().filter(|e| e.function == BASE).count(), 1);
        assert_eq!(
            get(BASE, 0),
            [BASE + 4, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]]
        );
        assert_eq!(get(BASE + 1, 0)[0] >> 16, 4);
        assert_eq!(get(BASE + 2, 0), [1, 0x4000_0000, 0, 0]);
        assert_eq!(get(BASE + 4, 0), [0x18, 0, 7, 0]);
        assert_ne!(get(1, 0)[2] & (1 << 31), 0);
        assert_eq!(get(1, 0)[1] >> 24, 0);
    }
}
