//! Xen ELF notes (`xen/include/public/elfnote.h`, libelf's `libelf-dominfo.c`;
//! pv-boot.md §1.4).

use super::{LoaderError, XenNotes};

pub const XEN_ELFNOTE_INFO: u32 = 0;
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
pub const XEN_ELFNOTE_LOADER: u32 = 8;
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

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
];

/// Bit number of a XENFEAT name.
pub fn xen_feature_bit(name: &str) -> Option<u32> {
    XENFEAT_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, b)| b)
}

fn note_name(ntype: u32) -> &'static str {
    match ntype {
        XEN_ELFNOTE_INFO => "INFO",
        XEN_ELFNOTE_ENTRY => "ENTRY",
        XEN_ELFNOTE_HYPERCALL_PAGE => "HYPERCALL_PAGE",
        XEN_ELFNOTE_VIRT_BASE => "VIRT_BASE",
        XEN_ELFNOTE_PADDR_OFFSET => "PADDR_OFFSET",
        XEN_ELFNOTE_XEN_VERSION => "XEN_VERSION",
        XEN_ELFNOTE_GUEST_OS => "GUEST_OS",
        XEN_ELFNOTE_GUEST_VERSION => "GUEST_VERSION",
        XEN_ELFNOTE_LOADER => "LOADER",
        XEN_ELFNOTE_PAE_MODE => "PAE_MODE",
        XEN_ELFNOTE_FEATURES => "FEATURES",
        XEN_ELFNOTE_BSD_SYMTAB => "BSD_SYMTAB",
        XEN_ELFNOTE_HV_START_LOW => "HV_START_LOW",
        XEN_ELFNOTE_L1_MFN_VALID => "L1_MFN_VALID",
        XEN_ELFNOTE_SUSPEND_CANCEL => "SUSPEND_CANCEL",
        XEN_ELFNOTE_INIT_P2M => "INIT_P2M",
        XEN_ELFNOTE_MOD_START_PFN => "MOD_START_PFN",
        XEN_ELFNOTE_SUPPORTED_FEATURES => "SUPPORTED_FEATURES",
        XEN_ELFNOTE_PHYS32_ENTRY => "PHYS32_ENTRY",
        _ => "unknown",
    }
}

/// One ELF note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// Name without trailing NULs.
    pub name: &'a [u8],
    pub ntype: u32,
    pub desc: &'a [u8],
}

/// Iterate over the notes in a note segment/section. Name and descriptor are padded to
/// 4 bytes (as libelf does, whatever the segment's alignment). Iteration stops at the
/// first note that does not fit.
pub fn iter(blob: &[u8]) -> impl Iterator<Item = Note<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                blob.get(at..at.checked_add(4)?)?.try_into().ok()?,
            ))
        };
        let namesz = word(pos)? as usize;
        let descsz = word(pos.checked_add(4)?)? as usize;
        let ntype = word(pos.checked_add(8)?)?;
        let name_start = pos.checked_add(12)?;
        let name_end = name_start.checked_add(namesz)?;
        let desc_start = name_start.checked_add(namesz.checked_add(3)? & !3)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let next = desc_start.checked_add(descsz.checked_add(3)? & !3)?;
        let name = blob.get(name_start..name_end)?;
        let desc = blob.get(desc_start..desc_end)?;
        pos = next;
        let mut name_len = name.len();
        while name_len > 0 && name[name_len - 1] == 0 {
            name_len -= 1;
        }
        Some(Note {
            name: &name[..name_len],
            ntype,
            desc,
        })
    })
}

/// Xen notes as found, before validation.
#[derive(Debug, Default)]
pub struct RawXenNotes {
    entry: Option<u64>,
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    hypercall_page: Option<u64>,
    init_p2m: Option<u64>,
    mod_start_pfn: Option<u64>,
    hv_start_low: Option<u64>,
    features: Option<String>,
    supported_features: Option<u64>,
    xen_version: Option<String>,
    guest_os: Option<String>,
    guest_version: Option<String>,
    loader: Option<String>,
    suspend_cancel: Option<u64>,
    l1_mfn_valid: Option<(u64, u64)>,
    phys32_entry: Option<u64>,
    /// First malformed note seen (reported at validation).
    error: Option<LoaderError>,
}

fn numeric(ntype: u32, desc: &[u8]) -> Result<u64, LoaderError> {
    // libelf's elf_note_numeric: 1, 2, 4 or 8 bytes, little-endian.
    match desc.len() {
        1 | 2 | 4 | 8 => {
            let mut b = [0u8; 8];
            b[..desc.len()].copy_from_slice(desc);
            Ok(u64::from_le_bytes(b))
        }
        n => Err(LoaderError::BadNote {
            name: note_name(ntype),
            msg: format!("a number cannot be {n} bytes long"),
        }),
    }
}

fn string(desc: &[u8]) -> String {
    // Bounded by descsz; NUL-terminated except FEATURES, which Linux emits with .ascii.
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    String::from_utf8_lossy(&desc[..end]).into_owned()
}

/// Add the Xen notes in `blob` to `raw`; returns whether any Xen note was found. Later
/// notes of the same type override earlier ones (as in libelf).
pub fn collect(blob: &[u8], raw: &mut RawXenNotes) -> bool {
    let mut found = false;
    for n in iter(blob).filter(|n| n.name == b"Xen") {
        found = true;
        if let Err(e) = raw.add(n) {
            raw.error.get_or_insert(e);
        }
    }
    found
}

impl RawXenNotes {
    fn add(&mut self, n: Note<'_>) -> Result<(), LoaderError> {
        let num = || numeric(n.ntype, n.desc);
        match n.ntype {
            XEN_ELFNOTE_ENTRY => self.entry = Some(num()?),
            XEN_ELFNOTE_HYPERCALL_PAGE => self.hypercall_page = Some(num()?),
            XEN_ELFNOTE_VIRT_BASE => self.virt_base = Some(num()?),
            XEN_ELFNOTE_PADDR_OFFSET => self.paddr_offset = Some(num()?),
            XEN_ELFNOTE_HV_START_LOW => self.hv_start_low = Some(num()?),
            XEN_ELFNOTE_SUSPEND_CANCEL => self.suspend_cancel = Some(num()?),
            XEN_ELFNOTE_INIT_P2M => self.init_p2m = Some(num()?),
            XEN_ELFNOTE_MOD_START_PFN => self.mod_start_pfn = Some(num()?),
            XEN_ELFNOTE_PHYS32_ENTRY => self.phys32_entry = Some(num()?),
            XEN_ELFNOTE_SUPPORTED_FEATURES => self.supported_features = Some(num()?),
            XEN_ELFNOTE_XEN_VERSION => self.xen_version = Some(string(n.desc)),
            XEN_ELFNOTE_GUEST_OS => self.guest_os = Some(string(n.desc)),
            XEN_ELFNOTE_GUEST_VERSION => self.guest_version = Some(string(n.desc)),
            XEN_ELFNOTE_LOADER => self.loader = Some(string(n.desc)),
            XEN_ELFNOTE_FEATURES => self.features = Some(string(n.desc)),
            XEN_ELFNOTE_L1_MFN_VALID => {
                let pair = n
                    .desc
                    .get(..16)
                    .map(|d| {
                        let (a, b) = d.split_at(8);
                        (
                            u64::from_le_bytes(a.try_into().unwrap_or_default()),
                            u64::from_le_bytes(b.try_into().unwrap_or_default()),
                        )
                    })
                    .ok_or_else(|| LoaderError::BadNote {
                        name: "L1_MFN_VALID",
                        msg: format!("{} bytes, need two 8-byte values", n.desc.len()),
                    })?;
                self.l1_mfn_valid = Some(pair);
            }
            // INFO, PAE_MODE, BSD_SYMTAB and unknown types: nothing a 64-bit PV
            // domU needs.
            _ => {}
        }
        Ok(())
    }

    /// Apply Xen's acceptance checks for a PV domU and produce [`XenNotes`]. The address
    /// checks that need the image extent are done by the caller.
    pub fn validate(self) -> Result<XenNotes, LoaderError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let xen_version = self.xen_version.unwrap_or_default();
        let guest_os = self.guest_os.unwrap_or_default();
        let loader = self.loader.unwrap_or_default();
        if !loader.starts_with("generic") && !guest_os.starts_with("linux") {
            return Err(LoaderError::NotGenericOrLinux { loader, guest_os });
        }
        if !xen_version.starts_with("xen-3.0") {
            return Err(LoaderError::XenVersion(xen_version));
        }

        let mut features = Vec::new();
        let mut required = Vec::new();
        for item in self.features.as_deref().unwrap_or("").split('|') {
            let item = item.trim_matches(|c: char| c.is_ascii_whitespace());
            let (name, req) = match item.strip_prefix('!') {
                Some(n) => (n, true),
                None => (item, false),
            };
            if name.is_empty() {
                continue;
            }
            if req {
                if xen_feature_bit(name).is_none() {
                    return Err(LoaderError::UnknownRequiredFeature(name.to_string()));
                }
                if name == "dom0" {
                    return Err(LoaderError::RequiresDom0);
                }
                required.push(name.to_string());
            } else if xen_feature_bit(name).is_none() {
                log::debug!("kernel declares unknown Xen feature {name:?}; ignored");
            }
            features.push(name.to_string());
        }

        let supported_features = match self.supported_features {
            None => 0,
            Some(v) => u32::try_from(v).map_err(|_| LoaderError::BadNote {
                name: "SUPPORTED_FEATURES",
                msg: format!("{v:#x} does not fit the 32-bit bitmap"),
            })?,
        };
        let virt_base = self
            .virt_base
            .ok_or(LoaderError::MissingNote("VIRT_BASE"))?;
        let entry = self.entry.ok_or(LoaderError::MissingNote("ENTRY"))?;

        Ok(XenNotes {
            entry,
            virt_base,
            paddr_offset: self.paddr_offset.unwrap_or(0),
            hypercall_page: self.hypercall_page,
            init_p2m: self.init_p2m,
            mod_start_pfn: self.mod_start_pfn.is_some_and(|v| v != 0),
            hv_start_low: self.hv_start_low,
            features,
            required_features: required,
            supported_features,
            xen_version,
            guest_os,
            guest_version: self.guest_version.unwrap_or_default(),
            loader,
            suspend_cancel: self.suspend_cancel.is_some_and(|v| v != 0),
            l1_mfn_valid: self.l1_mfn_valid,
            phys32_entry: self.phys32_entry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn parse(blob: &[u8]) -> Result<XenNotes, LoaderError> {
        let mut raw = RawXenNotes::default();
        if !collect(blob, &mut raw) {
            return Err(LoaderError::NoXenNotes);
        }
        raw.validate()
    }

    /// Minimal acceptable notes plus `extra` (later notes override earlier ones).
    fn minimal(extra: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(xen(XEN_ELFNOTE_GUEST_OS, b"linux\0"));
        v.extend(xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"));
        v.extend(xen(XEN_ELFNOTE_VIRT_BASE, &VIRT_BASE.to_le_bytes()));
        v.extend(xen(XEN_ELFNOTE_ENTRY, &ENTRY.to_le_bytes()));
        for e in extra {
            v.extend(e.iter().copied());
        }
        v
    }

    #[test]
    fn iterates_with_4_byte_padding() {
        let mut blob = note("GNU", 3, &[1, 2, 3, 4, 5]);
        blob.extend(note("Xen", 6, b"linux\0"));
        blob.extend(note("Linux", 1, b"6.1"));
        let notes: Vec<Note> = iter(&blob).collect();
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[0].name, b"GNU");
        assert_eq!(notes[0].desc, &[1, 2, 3, 4, 5]);
        assert_eq!(notes[1].name, b"Xen");
        assert_eq!(notes[1].ntype, 6);
        assert_eq!(notes[2].name, b"Linux");
        assert_eq!(notes[2].desc, b"6.1");
        // Truncation stops iteration without panicking.
        for cut in 0..blob.len() {
            assert!(iter(&blob[..cut]).count() <= 3);
        }
        // A descsz that overflows.
        let mut bad = note("Xen", 1, &[0; 8]);
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(iter(&bad).count(), 0);
    }

    #[test]
    fn linux_6_1_notes() {
        let n = parse(&linux_notes(Some(0xffff_ffff_8100_1000))).unwrap();
        assert_eq!(n.entry, ENTRY);
        assert_eq!(n.virt_base, VIRT_BASE);
        assert_eq!(n.paddr_offset, 0);
        assert_eq!(n.hypercall_page, Some(0xffff_ffff_8100_1000));
        assert_eq!(n.init_p2m, Some(0x80_0000_0000));
        assert!(n.mod_start_pfn);
        assert_eq!(
            n.features,
            vec!["writable_page_tables", "pae_pgdir_above_4gb"]
        );
        assert_eq!(n.required_features, vec!["writable_page_tables"]);
        assert_eq!(n.supported_features, 0x8801);
        assert_eq!(n.l1_mfn_valid, Some((1, 1)));
    }

    #[test]
    fn numeric_notes_by_descsz() {
        let n = parse(&minimal(&[
            xen(XEN_ELFNOTE_PADDR_OFFSET, &0x1234u32.to_le_bytes()),
            xen(
                XEN_ELFNOTE_HV_START_LOW,
                &0xffff_8000_0000_0000u64.to_le_bytes(),
            ),
            xen(XEN_ELFNOTE_MOD_START_PFN, &[1]),
        ]))
        .unwrap();
        assert_eq!(n.paddr_offset, 0x1234);
        assert_eq!(n.hv_start_low, Some(0xffff_8000_0000_0000));
        assert!(n.mod_start_pfn);
        let err = parse(&minimal(&[xen(XEN_ELFNOTE_ENTRY, &[0; 3])])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Xen ELF note ENTRY is malformed: a number cannot be 3 bytes long"
        );
    }

    #[test]
    fn strings_bounded_by_descsz() {
        // FEATURES without NUL, followed directly by another note.
        let n = parse(&minimal(&[
            xen(
                XEN_ELFNOTE_FEATURES,
                b"!writable_page_tables|pae_pgdir_above_4gb",
            ),
            xen(XEN_ELFNOTE_GUEST_VERSION, b"2.6"),
            xen(XEN_ELFNOTE_LOADER, b"generic\0junk"),
        ]))
        .unwrap();
        assert_eq!(n.features.len(), 2);
        assert_eq!(n.guest_version, "2.6");
        assert_eq!(n.loader, "generic");
    }

    #[test]
    fn only_xen_named_notes_count() {
        let mut blob = note("Linux", XEN_ELFNOTE_ENTRY, &1u64.to_le_bytes());
        blob.extend(note("GNU", XEN_ELFNOTE_VIRT_BASE, &1u64.to_le_bytes()));
        assert!(matches!(parse(&blob), Err(LoaderError::NoXenNotes)));
        let mut blob = minimal(&[]);
        blob.extend(note("Xenx", XEN_ELFNOTE_ENTRY, &1u64.to_le_bytes()));
        assert_eq!(parse(&blob).unwrap().entry, ENTRY);
    }

    #[test]
    fn acceptance_checks() {
        let err = parse(&minimal(&[xen(XEN_ELFNOTE_XEN_VERSION, b"xen-4.0\0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "XEN_VERSION note \"xen-4.0\" must start with xen-3.0"
        );

        let err = parse(&minimal(&[xen(XEN_ELFNOTE_GUEST_OS, b"netbsd\0")])).unwrap_err();
        assert!(
            matches!(err, LoaderError::NotGenericOrLinux { .. }),
            "{err}"
        );
        // ... unless LOADER is generic.
        parse(&minimal(&[
            xen(XEN_ELFNOTE_GUEST_OS, b"netbsd\0"),
            xen(XEN_ELFNOTE_LOADER, b"generic\0"),
        ]))
        .unwrap();

        let err = parse(&minimal(&[xen(XEN_ELFNOTE_FEATURES, b"!dom0")])).unwrap_err();
        assert!(matches!(err, LoaderError::RequiresDom0));
        assert!(err.to_string().starts_with("kernel requires feature dom0"));
        // Supporting (not requiring) dom0 is fine.
        let n = parse(&minimal(&[xen(
            XEN_ELFNOTE_FEATURES,
            b"dom0|!hvm_callback_vector",
        )]))
        .unwrap();
        assert_eq!(n.features, vec!["dom0", "hvm_callback_vector"]);
        assert_eq!(n.required_features, vec!["hvm_callback_vector"]);

        let err = parse(&minimal(&[xen(XEN_ELFNOTE_FEATURES, b"!frobnicate")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel requires unknown Xen feature \"frobnicate\""
        );
        // Unknown optional features are ignored (kept in the list).
        let n = parse(&minimal(&[xen(XEN_ELFNOTE_FEATURES, b"frobnicate||")])).unwrap();
        assert_eq!(n.features, vec!["frobnicate"]);
        assert!(n.required_features.is_empty());

        let err = parse(&minimal(&[xen(
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            &u64::MAX.to_le_bytes(),
        )]))
        .unwrap_err();
        assert!(matches!(err, LoaderError::BadNote { .. }));
    }

    #[test]
    fn required_notes() {
        let mut blob = xen(XEN_ELFNOTE_GUEST_OS, b"linux\0");
        blob.extend(xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"));
        let mut with_entry = blob.clone();
        with_entry.extend(xen(XEN_ELFNOTE_ENTRY, &ENTRY.to_le_bytes()));
        assert!(matches!(
            parse(&with_entry),
            Err(LoaderError::MissingNote("VIRT_BASE"))
        ));
        blob.extend(xen(XEN_ELFNOTE_VIRT_BASE, &VIRT_BASE.to_le_bytes()));
        assert!(matches!(
            parse(&blob),
            Err(LoaderError::MissingNote("ENTRY"))
        ));
    }

    #[test]
    fn feature_bits() {
        assert_eq!(xen_feature_bit("writable_page_tables"), Some(0));
        assert_eq!(xen_feature_bit("dom0"), Some(11));
        assert_eq!(xen_feature_bit("direct_mapped"), Some(17));
        assert_eq!(xen_feature_bit("nope"), None);
    }
}
