//! Xen ELF notes (`xen/include/public/elfnote.h`, libelf's `libelf-dominfo.c`;
//! pv-boot.md §1.4).

use super::features::{supported_features_note, Features};
use super::LoaderError;

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

/// XEN_ELFNOTE_PAE_MODE (`PAE=` in `__xen_guest`). It picks the guest
/// type and the `pae_extended_cr3` assist of a 32-bit guest; Xen ignores it
/// for a 64-bit one, and so does xenkvm (it is kept for the log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum PaeMode {
    #[default]
    No,
    Yes,
    ExtendedCr3,
    Bimodal,
}

/// Xen notes (or `__xen_guest` items) as found, before the defaults and checks
/// of [`RawXenNotes::validate`](super::dominfo).
#[derive(Debug, Default)]
pub struct RawXenNotes {
    pub(super) entry: Option<u64>,
    pub(super) virt_base: Option<u64>,
    pub(super) paddr_offset: Option<u64>,
    pub(super) hypercall_page: Option<u64>,
    pub(super) init_p2m: Option<u64>,
    pub(super) mod_start_pfn: Option<u64>,
    pub(super) hv_start_low: Option<u64>,
    pub(super) features: Option<Features>,
    /// SUPPORTED_FEATURES, OR-ed over every such note.
    pub(super) supported_features: u32,
    pub(super) xen_version: Option<String>,
    pub(super) guest_os: Option<String>,
    pub(super) guest_version: Option<String>,
    pub(super) loader: Option<String>,
    pub(super) pae_mode: PaeMode,
    pub(super) bsd_symtab: bool,
    pub(super) suspend_cancel: Option<u64>,
    pub(super) l1_mfn_valid: Option<(u64, u64)>,
    pub(super) phys32_entry: Option<u64>,
    /// Found in a legacy `__xen_guest` section rather than in ELF notes.
    pub(super) legacy: bool,
    /// First malformed note seen (reported at validation).
    pub(super) error: Option<LoaderError>,
}

fn numeric(ntype: u32, desc: &[u8]) -> Result<u64, LoaderError> {
    // libelf's elf_note_numeric: 1, 2, 4 or 8 bytes, little-endian. libelf
    // reads any other size as 0; a note that malformed is refused here.
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
/// notes of the same type override earlier ones (as in libelf); FEATURES and
/// SUPPORTED_FEATURES accumulate.
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
            XEN_ELFNOTE_SUPPORTED_FEATURES => {
                self.supported_features |= supported_features_note(n.desc)
            }
            XEN_ELFNOTE_XEN_VERSION => self.xen_version = Some(string(n.desc)),
            XEN_ELFNOTE_GUEST_OS => self.guest_os = Some(string(n.desc)),
            XEN_ELFNOTE_GUEST_VERSION => self.guest_version = Some(string(n.desc)),
            XEN_ELFNOTE_LOADER => self.loader = Some(string(n.desc)),
            XEN_ELFNOTE_FEATURES => self
                .features
                .get_or_insert_with(Features::default)
                .add(&string(n.desc))?,
            XEN_ELFNOTE_PAE_MODE => {
                let s = string(n.desc);
                if s == "yes" {
                    self.pae_mode = PaeMode::ExtendedCr3;
                }
                if s.contains("bimodal") {
                    self.pae_mode = PaeMode::Bimodal;
                }
            }
            XEN_ELFNOTE_BSD_SYMTAB if string(n.desc) == "yes" => self.bsd_symtab = true,
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
            // INFO and unknown types: nothing a 64-bit PV domU needs.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn raw(blob: &[u8]) -> RawXenNotes {
        let mut raw = RawXenNotes::default();
        assert!(collect(blob, &mut raw));
        raw
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
    fn numeric_notes_by_descsz() {
        let mut blob = xen(XEN_ELFNOTE_PADDR_OFFSET, &0x1234u32.to_le_bytes());
        blob.extend(xen(
            XEN_ELFNOTE_HV_START_LOW,
            &0xffff_8000_0000_0000u64.to_le_bytes(),
        ));
        blob.extend(xen(XEN_ELFNOTE_MOD_START_PFN, &[1]));
        blob.extend(xen(XEN_ELFNOTE_INIT_P2M, &0x80u16.to_le_bytes()));
        let r = raw(&blob);
        assert_eq!(r.paddr_offset, Some(0x1234));
        assert_eq!(r.hv_start_low, Some(0xffff_8000_0000_0000));
        assert_eq!(r.mod_start_pfn, Some(1));
        assert_eq!(r.init_p2m, Some(0x80));
        assert!(r.error.is_none());
        let r = raw(&xen(XEN_ELFNOTE_ENTRY, &[0; 3]));
        assert_eq!(
            r.error.unwrap().to_string(),
            "Xen ELF note ENTRY is malformed: a number cannot be 3 bytes long"
        );
    }

    #[test]
    fn strings_bounded_by_descsz() {
        // FEATURES without NUL, followed directly by another note.
        let mut blob = xen(
            XEN_ELFNOTE_FEATURES,
            b"!writable_page_tables|pae_pgdir_above_4gb",
        );
        blob.extend(xen(XEN_ELFNOTE_GUEST_VERSION, b"2.6"));
        blob.extend(xen(XEN_ELFNOTE_LOADER, b"generic\0junk"));
        let r = raw(&blob);
        assert_eq!(r.features.unwrap().all.len(), 2);
        assert_eq!(r.guest_version.as_deref(), Some("2.6"));
        assert_eq!(r.loader.as_deref(), Some("generic"));
    }

    #[test]
    fn later_notes_override_and_features_accumulate() {
        let mut blob = xen(XEN_ELFNOTE_GUEST_OS, b"linux\0");
        blob.extend(xen(XEN_ELFNOTE_GUEST_OS, b"Mini-OS\0"));
        blob.extend(xen(XEN_ELFNOTE_FEATURES, b"!writable_page_tables"));
        blob.extend(xen(XEN_ELFNOTE_FEATURES, b"pae_pgdir_above_4gb"));
        blob.extend(xen(XEN_ELFNOTE_SUPPORTED_FEATURES, &1u32.to_le_bytes()));
        blob.extend(xen(XEN_ELFNOTE_SUPPORTED_FEATURES, &0x800u32.to_le_bytes()));
        let r = raw(&blob);
        assert_eq!(r.guest_os.as_deref(), Some("Mini-OS"));
        let f = r.features.unwrap();
        assert_eq!(f.all, ["writable_page_tables", "pae_pgdir_above_4gb"]);
        assert_eq!(f.required, ["writable_page_tables"]);
        assert_eq!(r.supported_features, 0x801);
    }

    #[test]
    fn pae_mode_and_bsd_symtab() {
        let pae = |s: &[u8]| raw(&xen(XEN_ELFNOTE_PAE_MODE, s)).pae_mode;
        assert_eq!(pae(b"yes\0"), PaeMode::ExtendedCr3);
        assert_eq!(pae(b"bimodal\0"), PaeMode::Bimodal);
        assert_eq!(pae(b"yes,bimodal\0"), PaeMode::Bimodal);
        assert_eq!(pae(b"no\0"), PaeMode::No);
        assert_eq!(pae(b"yes[extended-cr3]\0"), PaeMode::No); // a legacy-string value only
        assert!(raw(&xen(XEN_ELFNOTE_BSD_SYMTAB, b"yes\0")).bsd_symtab);
        assert!(!raw(&xen(XEN_ELFNOTE_BSD_SYMTAB, b"no\0")).bsd_symtab);
    }

    #[test]
    fn a_refused_required_feature_is_kept_as_the_error() {
        let r = raw(&xen(XEN_ELFNOTE_FEATURES, b"!supervisor_mode_kernel"));
        assert!(matches!(
            r.error,
            Some(LoaderError::UnsupportedRequiredFeature { .. })
        ));
    }

    #[test]
    fn only_xen_named_notes_count() {
        let mut r = RawXenNotes::default();
        let mut blob = note("Linux", XEN_ELFNOTE_ENTRY, &1u64.to_le_bytes());
        blob.extend(note("GNU", XEN_ELFNOTE_VIRT_BASE, &1u64.to_le_bytes()));
        assert!(!collect(&blob, &mut r));
        blob.extend(note("Xenx", XEN_ELFNOTE_ENTRY, &1u64.to_le_bytes()));
        assert!(!collect(&blob, &mut r));
        assert_eq!(r.entry, None);
    }
}
