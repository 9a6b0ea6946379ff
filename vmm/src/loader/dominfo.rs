//! From the notes as found to [`XenNotes`]: Xen's acceptance checks and the
//! defaults of the notes a kernel may leave out (libelf's
//! `elf_xen_note_check` and the first half of `elf_xen_addr_calc_check`).
//! The address checks that need the image extent are in `load_elf`.
//!
//! | note | when absent |
//! | --- | --- |
//! | VIRT_BASE | 0 (but PADDR_OFFSET without VIRT_BASE is refused) |
//! | PADDR_OFFSET | 0; VIRT_BASE for a legacy `__xen_guest` kernel |
//! | ENTRY | the ELF header's `e_entry` |
//! | HYPERCALL_PAGE | no page to fill |

use super::notes::RawXenNotes;
use super::{LoaderError, XenNotes};

impl RawXenNotes {
    /// Check what Xen checks for a PV domU and apply its defaults; `e_entry`
    /// is the ELF header's entry point.
    pub fn validate(self, e_entry: u64) -> Result<XenNotes, LoaderError> {
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
        let features = self.features.unwrap_or_default();

        if self.paddr_offset.is_some() && self.virt_base.is_none() {
            return Err(LoaderError::PaddrOffsetWithoutVirtBase);
        }
        let virt_base = self.virt_base.unwrap_or_else(|| {
            log::info!("kernel has no VIRT_BASE: using 0");
            0
        });
        let paddr_offset = self.paddr_offset.unwrap_or_else(|| {
            // Old hypervisors placed legacy kernels by virtual address.
            let d = if self.legacy { virt_base } else { 0 };
            log::info!("kernel has no PADDR_OFFSET: using {d:#x}");
            d
        });
        let entry = self.entry.unwrap_or_else(|| {
            log::info!("kernel has no ENTRY: using e_entry {e_entry:#x}");
            e_entry
        });
        if self.bsd_symtab {
            log::warn!(
                "kernel asks for its symbol table (BSD_SYMTAB): xenkvm does not load it; \
                 booting without"
            );
        }
        log::debug!(
            "PAE_MODE {:?}: no effect on a 64-bit guest (as in Xen)",
            self.pae_mode
        );

        Ok(XenNotes {
            entry,
            virt_base,
            paddr_offset,
            hypercall_page: self.hypercall_page,
            init_p2m: self.init_p2m,
            mod_start_pfn: self.mod_start_pfn.is_some_and(|v| v != 0),
            hv_start_low: self.hv_start_low,
            supported_features: self.supported_features,
            features: features.all,
            required_features: features.required,
            xen_version,
            guest_os,
            guest_version: self.guest_version.unwrap_or_default(),
            loader,
            pae_mode: self.pae_mode,
            bsd_symtab: self.bsd_symtab,
            suspend_cancel: self.suspend_cancel.is_some_and(|v| v != 0),
            l1_mfn_valid: self.l1_mfn_valid,
            phys32_entry: self.phys32_entry,
            legacy_guest_info: self.legacy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::notes::*;
    use super::super::testutil::*;
    use super::*;

    const E_ENTRY: u64 = 0x10_0000;

    fn parse(blob: &[u8]) -> Result<XenNotes, LoaderError> {
        let mut raw = RawXenNotes::default();
        if !collect(blob, &mut raw) {
            return Err(LoaderError::NoXenNotes);
        }
        raw.validate(E_ENTRY)
    }

    /// Minimal acceptable notes plus `extra` (later notes override earlier ones).
    fn minimal(extra: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(xen(XEN_ELFNOTE_GUEST_OS, b"linux\0"));
        v.extend(xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"));
        for e in extra {
            v.extend(e.iter().copied());
        }
        v
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
        assert_eq!(n.features, ["writable_page_tables", "pae_pgdir_above_4gb"]);
        assert_eq!(n.required_features, ["writable_page_tables"]);
        assert_eq!(n.supported_features, 0x8801);
        assert_eq!(n.supported_bitmap(), 0x8811);
        assert_eq!(n.required_bitmap(), 1);
        assert_eq!(n.l1_mfn_valid, Some((1, 1)));
        assert_eq!(n.pae_mode, PaeMode::ExtendedCr3);
        assert!(!n.legacy_guest_info);
    }

    #[test]
    fn freestanding_defaults() {
        // No VIRT_BASE, PADDR_OFFSET or ENTRY: 0, 0 and e_entry.
        let n = parse(&minimal(&[xen(XEN_ELFNOTE_LOADER, b"generic\0")])).unwrap();
        assert_eq!((n.virt_base, n.paddr_offset, n.entry), (0, 0, E_ENTRY));
        assert_eq!(n.hypercall_page, None);
        // VIRT_BASE alone: PADDR_OFFSET still defaults to 0 with notes.
        let n = parse(&minimal(&[xen(
            XEN_ELFNOTE_VIRT_BASE,
            &VIRT_BASE.to_le_bytes(),
        )]))
        .unwrap();
        assert_eq!((n.virt_base, n.paddr_offset), (VIRT_BASE, 0));
        // ENTRY given: e_entry is not used.
        let n = parse(&minimal(&[xen(XEN_ELFNOTE_ENTRY, &ENTRY.to_le_bytes())])).unwrap();
        assert_eq!(n.entry, ENTRY);
    }

    #[test]
    fn paddr_offset_needs_virt_base() {
        let err = parse(&minimal(&[xen(
            XEN_ELFNOTE_PADDR_OFFSET,
            &0u64.to_le_bytes(),
        )]))
        .unwrap_err();
        assert!(
            matches!(err, LoaderError::PaddrOffsetWithoutVirtBase),
            "{err}"
        );
        assert!(err.to_string().contains("PADDR_OFFSET"), "{err}");
        let n = parse(&minimal(&[
            xen(XEN_ELFNOTE_VIRT_BASE, &0x1000u64.to_le_bytes()),
            xen(XEN_ELFNOTE_PADDR_OFFSET, &0x1000u64.to_le_bytes()),
        ]))
        .unwrap();
        assert_eq!((n.virt_base, n.paddr_offset), (0x1000, 0x1000));
    }

    #[test]
    fn legacy_defaults_paddr_offset_to_virt_base() {
        let mut raw = RawXenNotes::default();
        super::super::guest_info::collect(
            b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000\0",
            &mut raw,
        )
        .unwrap();
        let n = raw.validate(0xffff_ffff_8010_0000).unwrap();
        assert!(n.legacy_guest_info);
        assert_eq!(n.paddr_offset, VIRT_BASE);
        assert_eq!(n.entry, 0xffff_ffff_8010_0000);
    }

    #[test]
    fn acceptance_checks() {
        let err = parse(&minimal(&[xen(XEN_ELFNOTE_XEN_VERSION, b"xen-4.0\0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "XEN_VERSION note \"xen-4.0\" must start with xen-3.0"
        );
        let err = parse(&xen(XEN_ELFNOTE_GUEST_OS, b"linux\0")).unwrap_err();
        assert!(matches!(err, LoaderError::XenVersion(_)), "{err}");

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
            b"dom0|!pae_pgdir_above_4gb",
        )]))
        .unwrap();
        assert_eq!(n.features, ["dom0", "pae_pgdir_above_4gb"]);
        assert_eq!(n.required_features, ["pae_pgdir_above_4gb"]);

        let err = parse(&minimal(&[xen(
            XEN_ELFNOTE_FEATURES,
            b"!hvm_callback_vector",
        )]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kernel requires Xen feature hvm_callback_vector, "),
            "{err}"
        );
        let err = parse(&minimal(&[xen(XEN_ELFNOTE_FEATURES, b"!frobnicate")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kernel requires unknown Xen feature \"frobnicate\""),
            "{err}"
        );
        // SUPPORTED_FEATURES of two submaps: the first is Xen's.
        let n = parse(&minimal(&[xen(
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            &u64::MAX.to_le_bytes(),
        )]))
        .unwrap();
        assert_eq!(n.supported_features, u32::MAX);
    }
}
