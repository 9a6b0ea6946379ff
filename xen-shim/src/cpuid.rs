//! The CPUID policy presented to PV guests (forced-emulation CPUID and the
//! vCPU's native CPUID table).

/// One CPUID leaf/subleaf result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidEntry {
    pub leaf: u32,
    pub sub: u32,
    /// Whether `sub` is significant for this leaf.
    pub indexed: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub const XEN_LEAF_BASE: u32 = 0x4000_0000;

#[derive(Debug, Clone, Default)]
pub struct CpuidPolicy {
    pub entries: Vec<CpuidEntry>,
}

fn bits(list: &[u32]) -> u32 {
    list.iter().fold(0, |a, b| a | (1 << b))
}

impl CpuidPolicy {
    /// Derive the PV policy from the host's (KVM-supported) CPUID table.
    pub fn pv_from_host(host: &[CpuidEntry], tsc_khz: u32) -> CpuidPolicy {
        let mut entries: Vec<CpuidEntry> = host
            .iter()
            .filter(|e| !(0x4000_0000..0x4001_0000).contains(&e.leaf))
            .copied()
            .collect();
        for e in entries.iter_mut() {
            match (e.leaf, e.sub) {
                (1, _) => {
                    // VME PSE MCE MTRR PGE MCA PSE36 DS ACPI TM PBE
                    e.edx &= !bits(&[1, 3, 7, 12, 13, 14, 17, 21, 22, 29, 31]);
                    // DTES64 MONITOR DSCPL VMX SMX EIST TM2 FMA SDBG XTPR PDCM PCID DCA
                    // X2APIC TSC_DEADLINE XSAVE OSXSAVE AVX F16C
                    e.ecx &= !bits(&[
                        2, 3, 4, 5, 6, 7, 8, 12, 11, 14, 15, 17, 18, 21, 24, 26, 27, 28, 29,
                    ]);
                    e.ecx |= 1 << 31; // HYPERVISOR
                }
                (5, _) | (6, _) | (0xd, _) | (0x8000_000a, _) => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = 0;
                    e.edx = 0;
                }
                (7, 0) => {
                    // keep BMI1 ERMS? BMI2 ADX RDSEED CLFLUSHOPT CLWB SHA
                    e.ebx &= bits(&[3, 8, 9, 18, 19, 23, 24, 29]);
                    e.ecx = 0;
                    e.edx = 0;
                }
                (7, _) => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = 0;
                    e.edx = 0;
                }
                (0x8000_0001, _) => {
                    // SVM EXTAPIC CR8_LEGACY OSVW IBS SKINIT WDT LWP NODEID TOPOEXT PERFCTR* MONITORX
                    e.ecx &= !bits(&[2, 3, 4, 9, 10, 12, 13, 15, 19, 22, 23, 24, 28, 29]);
                    // PAGE1GB RDTSCP
                    e.edx &= !bits(&[26, 27]);
                }
                (0x8000_0007, _) => {
                    e.edx &= 1 << 8; // invariant TSC only
                }
                (0x8000_0008, _) => {
                    e.ebx = 0; // speculation controls
                }
                _ => {}
            }
        }
        let sig = |s: &[u8; 4]| u32::from_le_bytes(*s);
        let x = XEN_LEAF_BASE;
        entries.push(CpuidEntry {
            leaf: x,
            eax: x + 5,
            ebx: sig(b"XenV"),
            ecx: sig(b"MMXe"),
            edx: sig(b"nVMM"),
            ..Default::default()
        });
        entries.push(CpuidEntry {
            leaf: x + 1,
            eax: (crate::abi::XEN_MAJOR << 16) | crate::abi::XEN_MINOR,
            ..Default::default()
        });
        entries.push(CpuidEntry {
            leaf: x + 2,
            eax: 1,
            ebx: x,
            ecx: 1,
            ..Default::default()
        });
        entries.push(CpuidEntry {
            leaf: x + 3,
            indexed: true,
            eax: 0,
            ecx: tsc_khz,
            ..Default::default()
        });
        entries.push(CpuidEntry {
            leaf: x + 4,
            ..Default::default()
        });
        entries.push(CpuidEntry {
            leaf: x + 5,
            ..Default::default()
        });
        CpuidPolicy { entries }
    }

    /// CPUID result for `leaf`/`sub` as seen by vCPU `vcpu`.
    pub fn lookup(&self, leaf: u32, sub: u32, vcpu: u32) -> [u32; 4] {
        let hit = self
            .entries
            .iter()
            .find(|e| e.leaf == leaf && (!e.indexed || e.sub == sub));
        let Some(e) = hit else {
            return [0; 4];
        };
        let mut r = [e.eax, e.ebx, e.ecx, e.edx];
        if leaf == 1 {
            r[1] = (r[1] & 0x00ff_ffff) | (vcpu << 24);
        }
        if leaf == 0xb || leaf == 0x1f {
            r[3] = vcpu;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_signature_and_hidden_features() {
        let host = [
            CpuidEntry {
                leaf: 1,
                ecx: u32::MAX,
                edx: u32::MAX,
                ..Default::default()
            },
            CpuidEntry {
                leaf: 0x4000_0000,
                ebx: 0x4b4d564b,
                ..Default::default()
            },
        ];
        let p = CpuidPolicy::pv_from_host(&host, 2_000_000);
        let r = p.lookup(0x4000_0000, 0, 0);
        assert_eq!(&r[1].to_le_bytes(), b"XenV");
        assert!(r[0] >= 0x4000_0002);
        let l1 = p.lookup(1, 0, 3);
        assert_eq!(l1[3] & (1 << 13), 0, "PGE hidden");
        assert_ne!(l1[2] & (1 << 31), 0, "hypervisor bit");
        assert_eq!(l1[1] >> 24, 3);
        assert_eq!(p.lookup(0x4000_0003, 0, 0)[2], 2_000_000);
    }
}
