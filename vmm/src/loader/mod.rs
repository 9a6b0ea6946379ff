//! Kernel loading for PV guests.
//!
//! Accepts what Xen's domain builder accepts for an x86-64 PV guest (pv-boot.md §1):
//! a bzImage whose payload is a compressed ELF vmlinux, a bare ELF vmlinux, or a
//! compressed ELF vmlinux (e.g. `vmlinux.gz`). The ELF must carry Xen ELF notes
//! (Linux's `CONFIG_XEN_PV`, or a freestanding kernel's own) or a legacy `__xen_guest`
//! section; they are read by libelf's rules, defaults included (`dominfo.rs`:
//! VIRT_BASE 0, PADDR_OFFSET 0, entry `e_entry` when absent). The result is a list of
//! segments placed by physical address plus the parsed notes; laying out guest memory
//! is the domain builder's job.
//!
//! All input is treated as hostile: every offset and length is bounds-checked, all
//! arithmetic is checked, and decompression is capped at [`MAX_DECOMPRESSED`].

#![allow(dead_code)] // Parts of the API (bitmaps, raw note fields) are for later users.

mod bzimage;
mod dominfo;
mod elf;
mod features;
mod guest_info;
mod notes;
mod payload;

use std::path::{Path, PathBuf};

pub use notes::PaeMode;
pub use payload::Compression;

/// Largest decompressed kernel we accept (Debian's is ~51 MiB).
pub const MAX_DECOMPRESSED: usize = 512 << 20;
/// Largest span `[pstart, pend)` of the loaded image we accept (Debian's is 46 MiB).
pub const MAX_IMAGE_SPAN: u64 = 1 << 30;
/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;

/// One loadable piece of the kernel image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address (`p_paddr - paddr_offset` is *not* applied: this is
    /// the raw `p_paddr`, which is what Xen places relative to `pstart`).
    pub paddr: u64,
    /// File bytes (`p_filesz` of them).
    pub data: Vec<u8>,
    /// Size in memory; the bytes past `data.len()` are zero.
    pub memsz: u64,
}

/// The Xen ELF notes of a PV kernel (`xen/include/public/elfnote.h`), validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XenNotes {
    /// XEN_ELFNOTE_ENTRY: virtual entry point (`startup_xen`); `e_entry` when absent.
    pub entry: u64,
    /// XEN_ELFNOTE_VIRT_BASE: virtual address where pseudo-physical 0 is mapped; 0
    /// when absent (freestanding kernels).
    pub virt_base: u64,
    /// XEN_ELFNOTE_PADDR_OFFSET: 0 when absent (VIRT_BASE for a legacy
    /// `__xen_guest` kernel).
    pub paddr_offset: u64,
    /// XEN_ELFNOTE_HYPERCALL_PAGE: VA of the page the builder fills with hypercall
    /// stubs. `None` for Linux ≥ 6.1.12x (Debian ≥ 6.1.0-29).
    pub hypercall_page: Option<u64>,
    /// XEN_ELFNOTE_INIT_P2M, only when usable: page-aligned, below `virt_base` and
    /// outside the kernel (otherwise the builder maps the p2m list after the kernel).
    pub init_p2m: Option<u64>,
    /// XEN_ELFNOTE_MOD_START_PFN: the initrd may be passed by PFN, unmapped.
    pub mod_start_pfn: bool,
    /// XEN_ELFNOTE_HV_START_LOW.
    pub hv_start_low: Option<u64>,
    /// Every feature named in XEN_ELFNOTE_FEATURES, `!` stripped, in order.
    pub features: Vec<String>,
    /// The features marked required (`!`) in XEN_ELFNOTE_FEATURES.
    pub required_features: Vec<String>,
    /// XEN_ELFNOTE_SUPPORTED_FEATURES as found (the first 32-bit submap; 0 when
    /// absent). See [`XenNotes::supported_bitmap`] for the union with FEATURES.
    pub supported_features: u32,
    /// XEN_ELFNOTE_XEN_VERSION ("xen-3.0").
    pub xen_version: String,
    /// XEN_ELFNOTE_GUEST_OS ("linux").
    pub guest_os: String,
    /// XEN_ELFNOTE_GUEST_VERSION ("2.6").
    pub guest_version: String,
    /// XEN_ELFNOTE_LOADER ("generic").
    pub loader: String,
    /// XEN_ELFNOTE_PAE_MODE (no effect on a 64-bit guest).
    pub pae_mode: PaeMode,
    /// XEN_ELFNOTE_BSD_SYMTAB is "yes" (the symbol table is not loaded).
    pub bsd_symtab: bool,
    /// XEN_ELFNOTE_SUSPEND_CANCEL.
    pub suspend_cancel: bool,
    /// XEN_ELFNOTE_L1_MFN_VALID as (mask, value).
    pub l1_mfn_valid: Option<(u64, u64)>,
    /// XEN_ELFNOTE_PHYS32_ENTRY (PVH entry; ignored for PV).
    pub phys32_entry: Option<u64>,
    /// The values came from a legacy `__xen_guest` section, not ELF notes.
    pub legacy_guest_info: bool,
}

impl XenNotes {
    /// Bitmap of all features the kernel declares: SUPPORTED_FEATURES plus every
    /// FEATURES name Xen's loader knows (Xen's `f_supported`).
    pub fn supported_bitmap(&self) -> u32 {
        self.supported_features | features::bitmap_of(&self.features)
    }

    /// Bitmap of the features the kernel requires (Xen's `f_required`).
    pub fn required_bitmap(&self) -> u32 {
        features::bitmap_of(&self.required_features)
    }
}

/// A parsed, validated PV kernel ready to be placed in guest memory.
#[derive(Debug, Clone)]
pub struct PvKernel {
    /// Loadable segments (PT_LOAD with any of R/W/X), in program-header order.
    pub segments: Vec<Segment>,
    /// Lowest `p_paddr` of the segments.
    pub pstart: u64,
    /// Highest `p_paddr + p_memsz` of the segments.
    pub pend: u64,
    /// The Xen notes.
    pub notes: XenNotes,
    /// `pstart + virt_base - paddr_offset`.
    pub virt_kstart: u64,
    /// `pend + virt_base - paddr_offset`.
    pub virt_kend: u64,
    /// Virtual entry point (the ENTRY note).
    pub entry: u64,
    /// How the ELF was wrapped.
    pub compression: Compression,
}

impl PvKernel {
    /// Offset to add to a guest-physical kernel address to get its virtual address.
    pub fn virt_offset(&self) -> u64 {
        self.notes.virt_base.wrapping_sub(self.notes.paddr_offset)
    }
}

/// Why a kernel image was refused. The messages are meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot read kernel {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a bzImage or ELF kernel")]
    NotKernel,
    #[error("bzImage is truncated: {0}")]
    BzImageTruncated(String),
    #[error("bzImage protocol {0:#06x} too old: Xen needs >= 0x0208")]
    BzImageProtocol(u16),
    #[error(
        "bzImage payload (file offset {offset:#x}, length {length:#x}) does not fit in the \
         {file_len:#x}-byte file"
    )]
    PayloadBounds {
        offset: u64,
        length: u64,
        file_len: u64,
    },
    #[error("payload compression {0} not supported (supported: gzip, LZ4, lzma, xz, zstd)")]
    UnsupportedCompression(&'static str),
    #[error("bzImage payload format not recognised (first bytes {0})")]
    UnknownPayload(String),
    #[error("{format} payload is corrupt: {msg}")]
    Decompress { format: &'static str, msg: String },
    #[error("decompressed kernel is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error(
        "decompressed {format} payload is not an ELF image (a Xen PV kernel is an ELF vmlinux)"
    )]
    PayloadNotElf { format: &'static str },
    #[error("kernel is not an ELF64 x86-64 image: {0}")]
    NotElf64X86(String),
    #[error("malformed ELF: {0}")]
    BadElf(String),
    #[error("ELF has no loadable segments")]
    NoLoadableSegments,
    #[error("kernel image spans {0:#x} bytes of memory, more than the 1 GiB limit")]
    ImageTooLarge(u64),
    #[error(
        "kernel has no Xen ELF notes (nor a __xen_guest section): it is not a Xen \
         PV-capable kernel (Linux needs CONFIG_XEN_PV)"
    )]
    NoXenNotes,
    #[error("Xen ELF note {name} is malformed: {msg}")]
    BadNote { name: &'static str, msg: String },
    #[error("XEN_VERSION note {0:?} must start with xen-3.0")]
    XenVersion(String),
    #[error(
        "kernel is built for neither the generic loader nor Linux (LOADER {loader:?}, \
         GUEST_OS {guest_os:?})"
    )]
    NotGenericOrLinux { loader: String, guest_os: String },
    #[error(
        "kernel requires unknown Xen feature {0:?} (Xen's loader accepts only \
         writable_page_tables, writable_descriptor_tables, auto_translated_physmap, \
         supervisor_mode_kernel, pae_pgdir_above_4gb, hvm_callback_vector and dom0 \
         after a `!` in FEATURES)"
    )]
    UnknownRequiredFeature(String),
    #[error("kernel requires Xen feature {name}, which xenkvm does not provide: {why}")]
    UnsupportedRequiredFeature { name: String, why: &'static str },
    #[error("Xen ELF note PADDR_OFFSET is set but VIRT_BASE is not (Xen refuses this too)")]
    PaddrOffsetWithoutVirtBase,
    #[error(
        "kernel requires feature dom0: it can only run as Xen's control domain, not as a guest"
    )]
    RequiresDom0,
    #[error("kernel layout is inconsistent: {0}")]
    BadLayout(String),
}

/// Read a kernel file and [`load_pv_kernel`] it.
pub fn load_pv_kernel_file(path: &Path) -> Result<PvKernel, LoaderError> {
    let bytes = std::fs::read(path).map_err(|source| LoaderError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_pv_kernel(&bytes)
}

/// The ELF vmlinux of a kernel file's bytes: the file itself, or the
/// payload of a bzImage or a compressed ELF, decompressed (for PVH).
pub fn vmlinux(bytes: &[u8]) -> Result<Vec<u8>, LoaderError> {
    let elf_bytes = if elf::is_elf(bytes) {
        bytes.to_vec()
    } else if let Some(payload) = bzimage::payload(bytes)? {
        payload::decompress(payload, true)?.1
    } else if payload::detect(bytes).is_some() {
        payload::decompress(bytes, false)?.1
    } else {
        return Err(LoaderError::NotKernel);
    };
    if !elf::is_elf(&elf_bytes) {
        return Err(LoaderError::PayloadNotElf {
            format: "compressed",
        });
    }
    Ok(elf_bytes)
}

/// Parse a PV kernel: bzImage, bare ELF, or a compressed ELF.
pub fn load_pv_kernel(bytes: &[u8]) -> Result<PvKernel, LoaderError> {
    if elf::is_elf(bytes) {
        return load_elf(bytes, Compression::None);
    }
    if let Some(payload) = bzimage::payload(bytes)? {
        let (format, elf_bytes) = payload::decompress(payload, true)?;
        return load_elf(&elf_bytes, format);
    }
    if payload::detect(bytes).is_some() {
        let (format, elf_bytes) = payload::decompress(bytes, false)?;
        return load_elf(&elf_bytes, format);
    }
    Err(LoaderError::NotKernel)
}

fn load_elf(bytes: &[u8], compression: Compression) -> Result<PvKernel, LoaderError> {
    if !elf::is_elf(bytes) {
        return Err(LoaderError::PayloadNotElf {
            format: compression.name(),
        });
    }
    let image = elf::parse(bytes)?;
    let mut raw = notes::RawXenNotes::default();
    // Where libelf looks, in its order: PT_NOTE segments, else SHT_NOTE
    // sections, else the legacy `__xen_guest` section.
    let mut found = false;
    for range in &image.note_segments {
        found |= notes::collect(&bytes[range.clone()], &mut raw);
    }
    if !found {
        for range in &image.note_sections {
            found |= notes::collect(&bytes[range.clone()], &mut raw);
        }
    }
    if !found {
        if let Some(range) = &image.xen_guest_section {
            guest_info::collect(&bytes[range.clone()], &mut raw)?;
            found = true;
        }
    }
    if !found {
        return Err(LoaderError::NoXenNotes);
    }
    let mut xen = raw.validate(image.e_entry)?;
    let (virt_kstart, virt_kend) = check_addresses(&xen, image.pstart, image.pend)?;
    if let Some(p2m) = xen.init_p2m {
        if p2m % PAGE_SIZE != 0 || p2m >= xen.virt_base {
            log::info!(
                "ignoring INIT_P2M {p2m:#x}: not page-aligned or not below VIRT_BASE {:#x}",
                xen.virt_base
            );
            xen.init_p2m = None;
        }
    }
    let entry = xen.entry;
    Ok(PvKernel {
        segments: image.segments,
        pstart: image.pstart,
        pend: image.pend,
        notes: xen,
        virt_kstart,
        virt_kend,
        entry,
        compression,
    })
}

/// Xen's reserved hole of a 64-bit PV guest (L4 slots 256-271): no kernel
/// address may fall in it.
const HYPERVISOR_HOLE: std::ops::Range<u64> = 0xffff_8000_0000_0000..0xffff_8800_0000_0000;

/// The kernel's virtual range `[virt_kstart, virt_kend)` by libelf's rules
/// (`elf_xen_addr_calc_check`), plus what Xen's builder and a 64-bit page
/// table need: page alignment, canonical addresses, none in the hole.
fn check_addresses(xen: &XenNotes, pstart: u64, pend: u64) -> Result<(u64, u64), LoaderError> {
    let bad = |m: String| Err(LoaderError::BadLayout(m));
    let virt_offset = xen.virt_base.wrapping_sub(xen.paddr_offset);
    let (Some(virt_kstart), Some(virt_kend)) = (
        pstart.checked_add(virt_offset),
        pend.checked_add(virt_offset),
    ) else {
        return bad(format!(
            "physical range {pstart:#x}..{pend:#x} plus VIRT_BASE {:#x} - PADDR_OFFSET {:#x} \
             overflows",
            xen.virt_base, xen.paddr_offset
        ));
    };
    let entry = xen.entry;
    if !(xen.virt_base <= virt_kstart && virt_kstart <= entry && entry <= virt_kend) {
        return bad(format!(
            "need VIRT_BASE {:#x} <= kernel start {virt_kstart:#x} <= entry {entry:#x} <= \
             kernel end {virt_kend:#x}",
            xen.virt_base
        ));
    }
    if !xen.virt_base.is_multiple_of(PAGE_SIZE) || !virt_kstart.is_multiple_of(PAGE_SIZE) {
        return bad(format!(
            "VIRT_BASE {:#x} and the kernel start {virt_kstart:#x} must be page-aligned",
            xen.virt_base
        ));
    }
    let canonical = |a: u64| !(1 << 47..0xffff_8000_0000_0000).contains(&a);
    let last = virt_kend.saturating_sub(1).max(xen.virt_base);
    if !canonical(xen.virt_base)
        || !canonical(last)
        || (xen.virt_base < 1 << 47) != (last < 1 << 47)
        || (xen.virt_base < HYPERVISOR_HOLE.end && last >= HYPERVISOR_HOLE.start)
    {
        return bad(format!(
            "kernel addresses {:#x}..{virt_kend:#x} are not canonical or overlap Xen's \
             reserved {:#x}..{:#x}",
            xen.virt_base, HYPERVISOR_HOLE.start, HYPERVISOR_HOLE.end
        ));
    }
    if let Some(hp) = xen.hypercall_page {
        if hp % PAGE_SIZE != 0 || hp < virt_kstart || hp >= virt_kend {
            return bad(format!(
                "HYPERCALL_PAGE {hp:#x} is not a page inside the kernel \
                 ({virt_kstart:#x}..{virt_kend:#x})"
            ));
        }
    }
    if let Some(p2m) = xen.init_p2m {
        if p2m >= virt_kstart && p2m < virt_kend {
            return bad(format!(
                "INIT_P2M {p2m:#x} lies inside the kernel ({virt_kstart:#x}..{virt_kend:#x})"
            ));
        }
    }
    Ok((virt_kstart, virt_kend))
}

#[cfg(test)]
mod freestanding_tests;
#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
/// The Debian kernel fetched by resources/get-assets.sh (or $XENKVM_KERNEL).
pub(crate) fn test_kernel() -> Option<Vec<u8>> {
    let path = match std::env::var_os("XENKVM_KERNEL") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/cache/vmlinuz"),
    };
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
            if ci {
                panic!(
                    "real kernel {} missing under CI ({e}): run resources/get-assets.sh",
                    path.display()
                );
            }
            eprintln!(
                "skipping: no kernel at {} ({e}); run resources/get-assets.sh",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn linux_like() -> Vec<u8> {
        build_elf(&linux_notes(None), NotesIn::Segment)
    }

    #[test]
    fn elf_direct_loads_with_linux_notes() {
        let k = load_pv_kernel(&linux_like()).unwrap();
        assert_eq!(k.compression, Compression::None);
        assert_eq!(k.segments.len(), 3);
        assert_eq!(k.pstart, TEXT_PADDR);
        assert_eq!(k.pend, 0x100_4000);
        assert_eq!(k.entry, ENTRY);
        assert_eq!(k.virt_kstart, VIRT_BASE + TEXT_PADDR);
        assert_eq!(k.virt_kend, VIRT_BASE + 0x100_4000);
        assert_eq!(k.notes.init_p2m, Some(0x80_0000_0000));
        assert_eq!(k.notes.hypercall_page, None);
        assert!(k.notes.mod_start_pfn);
        assert!(k.notes.suspend_cancel);
        assert_eq!(k.notes.l1_mfn_valid, Some((1, 1)));
        assert_eq!(k.notes.hv_start_low, Some(0xffff_8000_0000_0000));
        assert_eq!(k.notes.phys32_entry, Some(0x100_0850));
        assert_eq!(
            k.notes.features,
            vec!["writable_page_tables", "pae_pgdir_above_4gb"]
        );
        assert_eq!(k.notes.required_features, vec!["writable_page_tables"]);
        assert_eq!(k.notes.supported_features, 0x8801);
        assert_eq!(k.notes.supported_bitmap(), 0x8811);
        assert_eq!(k.notes.required_bitmap(), 0x1);
        assert_eq!(k.notes.xen_version, "xen-3.0");
        assert_eq!(k.notes.guest_os, "linux");
        assert_eq!(k.notes.guest_version, "2.6");
        assert_eq!(k.notes.loader, "generic");
        // Placement by p_paddr: the percpu segment has vaddr 0 but paddr 0x1003000.
        assert_eq!(k.segments[2].paddr, 0x100_3000);
        assert_eq!(k.segments[0].data.len(), 0x300);
        assert_eq!(k.segments[0].memsz, 0x2000);
    }

    #[test]
    fn elf_with_hypercall_page() {
        let hp = VIRT_BASE + 0x100_1000;
        let k = load_pv_kernel(&build_elf(&linux_notes(Some(hp)), NotesIn::Segment)).unwrap();
        assert_eq!(k.notes.hypercall_page, Some(hp));
    }

    #[test]
    fn hypercall_page_outside_kernel_is_refused() {
        let elf = build_elf(
            &linux_notes(Some(VIRT_BASE + 0x4000_0000)),
            NotesIn::Segment,
        );
        assert!(matches!(
            load_pv_kernel(&elf),
            Err(LoaderError::BadLayout(_))
        ));
    }

    #[test]
    fn notes_from_sections_when_no_pt_note() {
        let k = load_pv_kernel(&build_elf(&linux_notes(None), NotesIn::Section)).unwrap();
        assert_eq!(k.entry, ENTRY);
        assert_eq!(k.notes.virt_base, VIRT_BASE);
    }

    #[test]
    fn non_pv_elf_is_refused() {
        // An ELF with only GNU/Linux notes, and one with no notes at all.
        let mut notes = note("GNU", 3, &[1; 20]);
        notes.extend(note("Linux", 1, b"6.1\0"));
        for elf in [
            build_elf(&notes, NotesIn::Segment),
            build_elf(&[], NotesIn::Nowhere),
        ] {
            let err = load_pv_kernel(&elf).unwrap_err();
            assert!(matches!(err, LoaderError::NoXenNotes), "{err}");
            assert!(err.to_string().contains("CONFIG_XEN_PV"));
        }
    }

    #[test]
    fn entry_outside_kernel_is_refused() {
        let mut notes = linux_notes(None);
        notes.extend(xen(notes::XEN_ELFNOTE_ENTRY, &0x100_0000u64.to_le_bytes()));
        let err = load_pv_kernel(&build_elf(&notes, NotesIn::Segment)).unwrap_err();
        assert!(matches!(err, LoaderError::BadLayout(_)), "{err}");
    }

    #[test]
    fn init_p2m_rules() {
        // Inside the kernel: refused.
        let mut n = linux_notes(None);
        n.extend(xen(
            notes::XEN_ELFNOTE_INIT_P2M,
            &(VIRT_BASE + TEXT_PADDR).to_le_bytes(),
        ));
        assert!(matches!(
            load_pv_kernel(&build_elf(&n, NotesIn::Segment)),
            Err(LoaderError::BadLayout(_))
        ));
        // Not page-aligned: ignored.
        let mut n = linux_notes(None);
        n.extend(xen(
            notes::XEN_ELFNOTE_INIT_P2M,
            &0x80_0000_0008u64.to_le_bytes(),
        ));
        let k = load_pv_kernel(&build_elf(&n, NotesIn::Segment)).unwrap();
        assert_eq!(k.notes.init_p2m, None);
        // Above virt_base (and outside the kernel): ignored.
        let mut n = linux_notes(None);
        n.extend(xen(
            notes::XEN_ELFNOTE_INIT_P2M,
            &0xffff_ffff_f000_0000u64.to_le_bytes(),
        ));
        let k = load_pv_kernel(&build_elf(&n, NotesIn::Segment)).unwrap();
        assert_eq!(k.notes.init_p2m, None);
    }

    #[test]
    fn bzimage_lz4_end_to_end() {
        let elf = linux_like();
        let payload = lz4_legacy(&elf, 1000, Some(2));
        let img = build_bzimage(&payload, 0x020f, 27);
        let k = load_pv_kernel(&img).unwrap();
        assert_eq!(k.compression, Compression::Lz4Legacy);
        assert_eq!(k.entry, ENTRY);
        assert_eq!(k.segments, load_pv_kernel(&elf).unwrap().segments);
    }

    #[test]
    fn compressed_elf_without_bzimage() {
        use std::io::Write;
        let elf = linux_like();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&elf).unwrap();
        let gz = enc.finish().unwrap();
        let k = load_pv_kernel(&gz).unwrap();
        assert_eq!(k.compression, Compression::Gzip);
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let err = load_pv_kernel(b"hello world, this is not a kernel").unwrap_err();
        assert_eq!(err.to_string(), "not a bzImage or ELF kernel");
        assert!(matches!(load_pv_kernel(&[]), Err(LoaderError::NotKernel)));
    }

    #[test]
    fn bzimage_with_non_elf_payload() {
        let data = vec![0x42u8; 5000];
        let img = build_bzimage(&lz4_legacy(&data, 4096, None), 0x020f, 4);
        let err = load_pv_kernel(&img).unwrap_err();
        assert!(matches!(err, LoaderError::PayloadNotElf { .. }), "{err}");
    }

    #[test]
    fn missing_file_error_names_path() {
        let err = load_pv_kernel_file(Path::new("/nonexistent/vmlinuz")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    }

    /// Fuzz-style: random bytes, truncations and bit flips of valid images must never
    /// panic.
    #[test]
    fn hostile_inputs_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let elf = linux_like();
        let elf_sections = build_elf(&linux_notes(Some(VIRT_BASE + 0x100_1000)), NotesIn::Section);
        let bz = build_bzimage(&lz4_legacy(&elf, 700, Some(1)), 0x020f, 2);
        let low = build_freestanding(&freestanding_notes(), None);
        let legacy = build_freestanding(
            &[],
            Some(b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0x0,HYPERCALL_PAGE=0x101\0"),
        );
        let seeds: [&[u8]; 5] = [&elf, &elf_sections, &bz, &low, &legacy];
        let mut ok = 0;
        for i in 0..3000 {
            let input: Vec<u8> = match i % 4 {
                0 => {
                    let len = rng.below(2048);
                    let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    // Sometimes give it a plausible magic so the deeper parsers run.
                    match rng.below(8) {
                        0 if v.len() >= 4 => v[..4].copy_from_slice(b"\x7fELF"),
                        1 if v.len() >= 0x250 => v[0x202..0x206].copy_from_slice(b"HdrS"),
                        2 if v.len() >= 4 => v[..4].copy_from_slice(&[0x02, 0x21, 0x4c, 0x18]),
                        3 if v.len() >= 4 => v[..4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]),
                        4 if v.len() >= 2 => v[..2].copy_from_slice(&[0x1f, 0x8b]),
                        5 if v.len() >= 6 => v[..6].copy_from_slice(b"\xfd7zXZ\0"),
                        _ => {}
                    }
                    v
                }
                1 => {
                    let s = seeds[rng.below(seeds.len())];
                    s[..rng.below(s.len() + 1)].to_vec()
                }
                _ => {
                    let s = seeds[rng.below(seeds.len())];
                    let mut v = s.to_vec();
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(v.len());
                        match rng.below(3) {
                            0 => v[at] ^= 1 << rng.below(8),
                            1 => v[at] = 0xff,
                            _ => {
                                // Overwrite a 4- or 8-byte field with a boundary value.
                                let vals = [
                                    0u64,
                                    1,
                                    0x7fff_ffff,
                                    0xffff_ffff,
                                    u64::MAX,
                                    0x8000_0000_0000_0000,
                                ];
                                let val = vals[rng.below(vals.len())].to_le_bytes();
                                let w = if rng.below(2) == 0 { 4 } else { 8 };
                                let end = (at + w).min(v.len());
                                v[at..end].copy_from_slice(&val[..end - at]);
                            }
                        }
                    }
                    v
                }
            };
            if load_pv_kernel(&input).is_ok() {
                ok += 1;
            }
        }
        // Some mutations hit padding and still load; most must be rejected.
        assert!(ok < 3000);
    }

    // ---------------------------------------------------------------- real kernel

    fn real_kernel() -> Option<Vec<u8>> {
        super::test_kernel()
    }

    #[test]
    fn real_debian_kernel() {
        let Some(bytes) = real_kernel() else { return };
        let k = load_pv_kernel(&bytes).unwrap();
        eprintln!(
            "real kernel: {:?}, entry {:#x}, pstart {:#x}, pend {:#x}, virt {:#x}..{:#x}",
            k.compression, k.entry, k.pstart, k.pend, k.virt_kstart, k.virt_kend
        );
        for s in &k.segments {
            eprintln!(
                "  segment paddr {:#x} filesz {:#x} memsz {:#x}",
                s.paddr,
                s.data.len(),
                s.memsz
            );
        }
        eprintln!("  notes: {:#x?}", k.notes);
        assert_eq!(k.compression, Compression::Lz4Legacy);
        assert_eq!(k.notes.virt_base, 0xffff_ffff_8000_0000);
        assert_eq!(k.notes.paddr_offset, 0);
        assert_eq!(k.pstart, 0x100_0000);
        assert_eq!(k.virt_kstart, 0xffff_ffff_8100_0000);
        assert!(k.virt_kstart <= k.entry && k.entry < k.virt_kend);
        assert_eq!(k.notes.init_p2m, Some(0x80_0000_0000));
        assert!(k.notes.mod_start_pfn);
        assert!(k.notes.features.iter().any(|f| f == "writable_page_tables"));
        assert!(k.notes.features.iter().any(|f| f == "pae_pgdir_above_4gb"));
        assert_eq!(
            k.notes.hypercall_page, None,
            "Debian 6.1.0-29+ has no hypercall page"
        );
        assert_eq!(k.notes.xen_version, "xen-3.0");
        assert_eq!(k.notes.guest_os, "linux");
        assert_eq!(k.notes.loader, "generic");
        assert!(!k.notes.required_features.iter().any(|f| f == "dom0"));
        assert!(k.segments.len() >= 3);
        for s in &k.segments {
            assert!(s.paddr >= k.pstart && s.paddr + s.memsz <= k.pend);
            assert!(s.data.len() as u64 <= s.memsz);
        }
    }

    /// Truncated and bit-flipped copies of the real kernel's header region must not panic.
    #[test]
    fn real_kernel_truncations_never_panic() {
        let Some(bytes) = real_kernel() else { return };
        for cut in [0, 1, 0x1f1, 0x202, 0x24f, 0x250, 0x52cc, 0x52d0, 0x10000] {
            let cut = cut.min(bytes.len());
            assert!(load_pv_kernel(&bytes[..cut]).is_err());
        }
        // Cut inside the payload: the LZ4 decoder must report, not panic.
        let cut = bytes.len() / 2;
        assert!(load_pv_kernel(&bytes[..cut]).is_err());
    }
}
