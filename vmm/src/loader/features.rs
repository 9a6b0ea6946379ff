//! The FEATURES note (and the `FEATURES=` item of a legacy `__xen_guest`
//! string): `|`-separated XENFEAT names, a leading `!` marking a feature the
//! kernel requires. Parsed by libelf's rules (`elf_xen_parse_features` in
//! `xen/common/libelf/libelf-dominfo.c`), then checked against what xenkvm
//! gives a 64-bit PV domU.

use super::LoaderError;

/// XENFEAT_* names and bit numbers (`xen/include/public/features.h`).
pub const XENFEAT_NAMES: &[(&str, u32)] = &[
    ("writable_page_tables", 0),
    ("writable_descriptor_tables", 1),
    ("auto_translated_physmap", 2),
    ("supervisor_mode_kernel", 3),
    ("pae_pgdir_above_4gb", 4),
    ("mmu_pt_update_preserve_ad", 5),
    ("highmem_assist", 6),
    ("gnttab_map_avail_bits", 7),
    ("hvm_callback_vector", 8),
    ("hvm_safe_pvclock", 9),
    ("hvm_pirqs", 10),
    ("dom0", 11),
    ("grant_map_identity", 12),
    ("memory_op_vnode_supported", 13),
    ("ARM_SMCCC_supported", 14),
    ("linux_rsdp_unrestricted", 15),
    ("not_direct_mapped", 16),
    ("direct_mapped", 17),
    ("runstate_phys_area", 18),
    ("vcpu_time_phys_area", 19),
    ("dm_msix_all_writes", 20),
];

/// The names Xen's ELF loader knows in FEATURES. An optional name outside
/// this list is ignored; a required one (`!name`) makes it refuse the kernel.
pub const LOADER_FEATURE_NAMES: &[&str] = &[
    "writable_page_tables",
    "writable_descriptor_tables",
    "auto_translated_physmap",
    "supervisor_mode_kernel",
    "pae_pgdir_above_4gb",
    "hvm_callback_vector",
    "dom0",
];

/// Bit number of a XENFEAT name.
pub fn xen_feature_bit(name: &str) -> Option<u32> {
    XENFEAT_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, b)| b)
}

/// Why xenkvm cannot honour a feature a kernel requires, or None when it can.
/// `dom0` is refused separately ([`LoaderError::RequiresDom0`]).
fn unsupported_because(name: &str) -> Option<&'static str> {
    match name {
        // Xen's PV MMU: page-table writes are trapped and emulated.
        "writable_page_tables" => None,
        // Meaningless for a 64-bit guest: its L4 may live anywhere.
        "pae_pgdir_above_4gb" => None,
        "writable_descriptor_tables" => Some(
            "descriptor tables change only through HYPERVISOR_update_descriptor \
             (Xen never offered writable descriptor tables to PV guests either)",
        ),
        "auto_translated_physmap" => Some(
            "PV guests use machine frame numbers (Xen's builder refuses \
             auto-translated PV guests too)",
        ),
        "supervisor_mode_kernel" => Some("a PV kernel runs in ring 3, never in ring 0"),
        "hvm_callback_vector" => Some("it is an HVM feature; xenkvm runs PV guests"),
        _ => Some("unknown to Xen's ELF loader"),
    }
}

/// FEATURES after parsing: every name (without `!`), in order, and the
/// required ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Features {
    pub all: Vec<String>,
    pub required: Vec<String>,
}

impl Features {
    /// Add the items of one FEATURES string. Items are split at `|` only
    /// (no trimming, as libelf); empty items are skipped. Refuses a required
    /// feature that Xen's loader does not know (as libelf does) or that
    /// xenkvm does not provide.
    pub fn add(&mut self, s: &str) -> Result<(), LoaderError> {
        for item in s.split('|').filter(|i| !i.is_empty()) {
            let (name, required) = match item.strip_prefix('!') {
                Some(n) => (n, true),
                None => (item, false),
            };
            if required {
                check_required(name)?;
                self.required.push(name.to_string());
            } else if !LOADER_FEATURE_NAMES.contains(&name) {
                log::debug!("kernel declares Xen feature {name:?}, unknown to the loader; ignored");
            }
            if !name.is_empty() {
                self.all.push(name.to_string());
            }
        }
        Ok(())
    }

    /// Xen's `f_supported` from FEATURES alone: the bits of the names the
    /// loader knows (required or not).
    pub fn bitmap(&self) -> u32 {
        bitmap_of(&self.all)
    }

    /// Xen's `f_required`.
    pub fn required_bitmap(&self) -> u32 {
        bitmap_of(&self.required)
    }
}

/// The XENFEAT bits of `names`, counting only the names the loader knows.
pub fn bitmap_of(names: &[String]) -> u32 {
    names
        .iter()
        .filter(|n| LOADER_FEATURE_NAMES.contains(&n.as_str()))
        .filter_map(|n| xen_feature_bit(n))
        .fold(0, |acc, b| acc | (1 << b))
}

fn check_required(name: &str) -> Result<(), LoaderError> {
    if !LOADER_FEATURE_NAMES.contains(&name) {
        return Err(LoaderError::UnknownRequiredFeature(name.to_string()));
    }
    if name == "dom0" {
        return Err(LoaderError::RequiresDom0);
    }
    match unsupported_because(name) {
        None => Ok(()),
        Some(why) => Err(LoaderError::UnsupportedRequiredFeature {
            name: name.to_string(),
            why,
        }),
    }
}

/// SUPPORTED_FEATURES: an array of 32-bit XENFEAT submaps. Xen knows one
/// submap; later words are ignored. libelf reads a descriptor whose size is
/// not a multiple of 4 as no features at all; so do we (with a warning).
pub fn supported_features_note(desc: &[u8]) -> u32 {
    match desc.get(..4) {
        Some(w) if desc.len().is_multiple_of(4) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
        _ => {
            log::warn!(
                "Xen ELF note SUPPORTED_FEATURES is {} bytes, not 32-bit words: ignored",
                desc.len()
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Features, LoaderError> {
        let mut f = Features::default();
        f.add(s)?;
        Ok(f)
    }

    #[test]
    fn linux_features() {
        let f = parse("!writable_page_tables|pae_pgdir_above_4gb").unwrap();
        assert_eq!(f.all, ["writable_page_tables", "pae_pgdir_above_4gb"]);
        assert_eq!(f.required, ["writable_page_tables"]);
        assert_eq!(f.bitmap(), 0x11);
        assert_eq!(f.required_bitmap(), 0x1);
    }

    #[test]
    fn optional_names_the_loader_does_not_know_are_ignored() {
        let f = parse("frobnicate||gnttab_map_avail_bits|dom0").unwrap();
        assert_eq!(f.all, ["frobnicate", "gnttab_map_avail_bits", "dom0"]);
        assert!(f.required.is_empty());
        // Only dom0 is a loader name: libelf sets no bit for the others.
        assert_eq!(f.bitmap(), 1 << 11);
    }

    #[test]
    fn required_names_must_be_known_to_the_loader() {
        let err = parse("!frobnicate").unwrap_err();
        assert!(matches!(err, LoaderError::UnknownRequiredFeature(ref n) if n == "frobnicate"));
        assert!(err.to_string().contains("\"frobnicate\""), "{err}");
        // A real XENFEAT that libelf cannot parse as a requirement: refused as libelf does.
        let err = parse("!gnttab_map_avail_bits").unwrap_err();
        assert!(
            matches!(err, LoaderError::UnknownRequiredFeature(_)),
            "{err}"
        );
        // No trimming: " writable_page_tables" is not a name.
        assert!(parse("! writable_page_tables").is_err());
        assert!(parse("!").is_err());
    }

    #[test]
    fn required_features_xenkvm_lacks_are_refused_by_name() {
        for name in [
            "writable_descriptor_tables",
            "auto_translated_physmap",
            "supervisor_mode_kernel",
            "hvm_callback_vector",
        ] {
            let err = parse(&format!("pae_pgdir_above_4gb|!{name}")).unwrap_err();
            assert!(
                matches!(err, LoaderError::UnsupportedRequiredFeature { name: ref n, .. } if n == name),
                "{name}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("kernel requires Xen feature {name}, ")),
                "{msg}"
            );
            // Only supporting it is fine.
            assert_eq!(parse(name).unwrap().all, [name]);
        }
        assert!(matches!(parse("!dom0"), Err(LoaderError::RequiresDom0)));
        parse("!pae_pgdir_above_4gb|!writable_page_tables").unwrap();
    }

    #[test]
    fn supported_features_bitmap() {
        assert_eq!(supported_features_note(&0x8801u32.to_le_bytes()), 0x8801);
        // Two submaps: Xen reads the first only.
        assert_eq!(supported_features_note(&u64::MAX.to_le_bytes()), u32::MAX);
        let mut two = 0x5u32.to_le_bytes().to_vec();
        two.extend_from_slice(&0xffu32.to_le_bytes());
        assert_eq!(supported_features_note(&two), 5);
        // Not whole words: no features, as libelf.
        assert_eq!(supported_features_note(&[1, 2]), 0);
        assert_eq!(supported_features_note(&[1, 0, 0, 0, 1]), 0);
        assert_eq!(supported_features_note(&[]), 0);
    }

    #[test]
    fn feature_bits() {
        assert_eq!(xen_feature_bit("writable_page_tables"), Some(0));
        assert_eq!(xen_feature_bit("dom0"), Some(11));
        assert_eq!(xen_feature_bit("direct_mapped"), Some(17));
        assert_eq!(xen_feature_bit("nope"), None);
    }
}
