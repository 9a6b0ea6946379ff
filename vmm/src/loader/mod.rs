//! Kernel loading for PV guests.
//!
//! Accepts what Xen's domain builder accepts for an x86-64 PV guest (pv-boot.md §1):
//! a bzImage whose payload is a compressed ELF vmlinux, a bare ELF vmlinux, or a
//! compressed ELF vmlinux (e.g. `vmlinux.gz`). The ELF must carry Xen ELF notes
//! (`CONFIG_XEN_PV`). The result is a list of segments placed by physical address plus
//! the parsed notes; laying out guest memory is the domain builder's job.
//!
//! All input is treated as hostile: every offset and length is bounds-checked, all
//! arithmetic is checked, and decompression is capped at [`MAX_DECOMPRESSED`].

#![allow(dead_code)] // Parts of the API (bitmaps, raw note fields) are for later users.

mod bzimage;
mod elf;
mod notes;
mod payload;

use std::path::{Path, PathBuf};

pub use notes::xen_feature_bit;
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
    /// XEN_ELFNOTE_ENTRY: virtual entry point (`startup_xen`).
    pub entry: u64,
    /// XEN_ELFNOTE_VIRT_BASE: virtual address where pseudo-physical 0 is mapped.
    pub virt_base: u64,
    /// XEN_ELFNOTE_PADDR_OFFSET (0 when absent).
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
    /// XEN_ELFNOTE_SUPPORTED_FEATURES as found (a XENFEAT bitmap; 0 when absent). See
    /// [`XenNotes::supported_bitmap`] for the union with the FEATURES names.
    pub supported_features: u32,
    /// XEN_ELFNOTE_XEN_VERSION ("xen-3.0").
    pub xen_version: String,
    /// XEN_ELFNOTE_GUEST_OS ("linux").
    pub guest_os: String,
    /// XEN_ELFNOTE_GUEST_VERSION ("2.6").
    pub guest_version: String,
    /// XEN_ELFNOTE_LOADER ("generic").
    pub loader: String,
    /// XEN_ELFNOTE_SUSPEND_CANCEL.
    pub suspend_cancel: bool,
    /// XEN_ELFNOTE_L1_MFN_VALID as (mask, value).
    pub l1_mfn_valid: Option<(u64, u64)>,
    /// XEN_ELFNOTE_PHYS32_ENTRY (PVH entry; ignored for PV).
    pub phys32_entry: Option<u64>,
}

impl XenNotes {
    /// Bitmap of all features the kernel declares: SUPPORTED_FEATURES plus every known
    /// name in FEATURES (Xen's `f_supported`).
    pub fn supported_bitmap(&self) -> u32 {
        self.features
            .iter()
            .filter_map(|f| xen_feature_bit(f))
            .filter(|&b| b < 32)
            .fold(self.supported_features, |acc, b| acc | (1 << b))
    }

    /// Bitmap of the features the kernel requires (Xen's `f_required`).
    pub fn required_bitmap(&self) -> u32 {
        self.required_features
            .iter()
            .filter_map(|f| xen_feature_bit(f))
            .filter(|&b| b < 32)
            .fold(0, |acc, b| acc | (1 << b))
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
        "kernel has no Xen ELF notes: it is not a Xen PV-capable kernel (needs CONFIG_XEN_PV)"
    )]
    NoXenNotes,
    #[error("Xen ELF note {name} is malformed: {msg}")]
    BadNote { name: &'static str, msg: String },
    #[error("Xen ELF note {0} is missing: it is required for a PV kernel")]
    MissingNote(&'static str),
    #[error("XEN_VERSION note {0:?} must start with xen-3.0")]
    XenVersion(String),
    #[error(
        "kernel is built for neither the generic loader nor Linux (LOADER {loader:?}, \
         GUEST_OS {guest_os:?})"
    )]
    NotGenericOrLinux { loader: String, guest_os: String },
    #[error("kernel requires unknown Xen feature {0:?}")]
    UnknownRequiredFeature(String),
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
        return Err(LoaderError::NoXenNotes);
    }
    let mut xen = raw.validate()?;

    // Address computation and checks as libelf's elf_xen_addr_calc_check.
    let virt_offset = xen.virt_base.wrapping_sub(xen.paddr_offset);
    let (virt_kstart, virt_kend) = match (
        image.pstart.checked_add(virt_offset),
        image.pend.checked_add(virt_offset),
    ) {
        (Some(s), Some(e)) => (s, e),
        _ => {
            return Err(LoaderError::BadLayout(format!(
                "physical range {:#x}..{:#x} plus VIRT_BASE {:#x} - PADDR_OFFSET {:#x} \
                 overflows",
                image.pstart, image.pend, xen.virt_base, xen.paddr_offset
            )))
        }
    };
    let entry = xen.entry;
    if !(xen.virt_base <= virt_kstart && virt_kstart <= entry && entry <= virt_kend) {
        return Err(LoaderError::BadLayout(format!(
            "need VIRT_BASE {:#x} <= kernel start {virt_kstart:#x} <= ENTRY {entry:#x} <= \
             kernel end {virt_kend:#x}",
            xen.virt_base
        )));
    }
    if let Some(hp) = xen.hypercall_page {
        if hp % PAGE_SIZE != 0 || hp < virt_kstart || hp >= virt_kend {
            return Err(LoaderError::BadLayout(format!(
                "HYPERCALL_PAGE {hp:#x} is not a page inside the kernel \
                 ({virt_kstart:#x}..{virt_kend:#x})"
            )));
        }
    }
    if let Some(p2m) = xen.init_p2m {
        if p2m >= virt_kstart && p2m < virt_kend {
            return Err(LoaderError::BadLayout(format!(
                "INIT_P2M {p2m:#x} lies inside the kernel ({virt_kstart:#x}..{virt_kend:#x})"
            )));
        }
        if p2m % PAGE_SIZE != 0 || p2m >= xen.virt_base {
            log::info!(
                "ignoring INIT_P2M {p2m:#x}: not page-aligned or not below VIRT_BASE {:#x}",
                xen.virt_base
            );
            xen.init_p2m = None;
        }
    }

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

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for synthetic kernels, shared by the loader's tests.

    use super::notes::*;

    pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
    pub const TEXT_PADDR: u64 = 0x100_0000;
    pub const ENTRY: u64 = 0xffff_ffff_8100_0040;

    /// One ELF note, padded as the ELF spec (and Xen) expect.
    pub fn note(name: &str, ntype: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        let name_z = [name.as_bytes(), &[0]].concat();
        n.extend_from_slice(&(name_z.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ntype.to_le_bytes());
        n.extend_from_slice(&name_z);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n.extend_from_slice(desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    pub fn xen(ntype: u32, desc: &[u8]) -> Vec<u8> {
        note("Xen", ntype, desc)
    }

    /// The notes Linux 6.1 emits (arch/x86/xen/xen-head.S), optionally with a hypercall page.
    pub fn linux_notes(hypercall_page: Option<u64>) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(note("GNU", 3, &[0xab; 20]));
        v.extend(xen(XEN_ELFNOTE_GUEST_OS, b"linux\0"));
        v.extend(xen(XEN_ELFNOTE_GUEST_VERSION, b"2.6\0"));
        v.extend(xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"));
        v.extend(xen(XEN_ELFNOTE_VIRT_BASE, &VIRT_BASE.to_le_bytes()));
        v.extend(xen(XEN_ELFNOTE_INIT_P2M, &0x80_0000_0000u64.to_le_bytes()));
        v.extend(xen(XEN_ELFNOTE_ENTRY, &ENTRY.to_le_bytes()));
        if let Some(hp) = hypercall_page {
            v.extend(xen(XEN_ELFNOTE_HYPERCALL_PAGE, &hp.to_le_bytes()));
        }
        v.extend(xen(
            XEN_ELFNOTE_FEATURES,
            b"!writable_page_tables|pae_pgdir_above_4gb",
        ));
        v.extend(xen(
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            &0x8801u32.to_le_bytes(),
        ));
        v.extend(xen(XEN_ELFNOTE_PAE_MODE, b"yes\0"));
        let mut l1 = 1u64.to_le_bytes().to_vec();
        l1.extend_from_slice(&1u64.to_le_bytes());
        v.extend(xen(XEN_ELFNOTE_L1_MFN_VALID, &l1));
        v.extend(xen(XEN_ELFNOTE_MOD_START_PFN, &1u32.to_le_bytes()));
        v.extend(xen(XEN_ELFNOTE_LOADER, b"generic\0"));
        v.extend(xen(XEN_ELFNOTE_SUSPEND_CANCEL, &1u32.to_le_bytes()));
        v.extend(xen(
            XEN_ELFNOTE_HV_START_LOW,
            &0xffff_8000_0000_0000u64.to_le_bytes(),
        ));
        v.extend(xen(XEN_ELFNOTE_PADDR_OFFSET, &0u64.to_le_bytes()));
        v.extend(xen(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0850u64.to_le_bytes()));
        v.extend(note("Linux", 1, b"6.1.0-test\0"));
        v
    }

    /// Where to put the notes of a synthetic ELF.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum NotesIn {
        Segment,
        Section,
        Nowhere,
    }

    /// A small Linux-like x86-64 vmlinux: a text segment at 16 MiB (vaddr
    /// 0xffffffff81000000), a data segment, a percpu-like segment with vaddr 0, and the
    /// given notes.
    pub fn build_elf(notes: &[u8], notes_in: NotesIn) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        const SHDR: usize = 64;
        let text: Vec<u8> = (0..0x300u32).map(|i| (i * 7) as u8).collect();
        let data: Vec<u8> = (0..0x80u32).map(|i| (i * 3 + 1) as u8).collect();
        let percpu = vec![0x5au8; 0x40];
        let nphdr = 3 + usize::from(notes_in == NotesIn::Segment);
        let notes_off = EHDR + nphdr * PHDR;
        let text_off = 0x1000usize;
        let data_off = text_off + text.len();
        let percpu_off = data_off + data.len();
        let shdr_off = (percpu_off + percpu.len() + 7) & !7;
        assert!(notes_off + notes.len() <= text_off, "test notes too long");

        let mut f = vec![0u8; shdr_off];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        let put16 =
            |f: &mut Vec<u8>, o: usize, v: u16| f[o..o + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |f: &mut Vec<u8>, o: usize, v: u32| f[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |f: &mut Vec<u8>, o: usize, v: u64| f[o..o + 8].copy_from_slice(&v.to_le_bytes());
        put16(&mut f, 16, 2); // ET_EXEC
        put16(&mut f, 18, 62); // EM_X86_64
        put32(&mut f, 20, 1);
        put64(&mut f, 24, TEXT_PADDR); // e_entry: physical, as in Linux
        put64(&mut f, 32, EHDR as u64); // e_phoff
        put16(&mut f, 52, EHDR as u16);
        put16(&mut f, 54, PHDR as u16);
        put16(&mut f, 56, nphdr as u16);
        put16(&mut f, 58, SHDR as u16);

        // (type, flags, offset, vaddr, paddr, filesz, memsz)
        let mut phdrs: Vec<(u32, u32, u64, u64, u64, u64, u64)> = vec![
            (
                1,
                5,
                text_off as u64,
                VIRT_BASE + TEXT_PADDR,
                TEXT_PADDR,
                text.len() as u64,
                0x2000,
            ),
            (
                1,
                6,
                data_off as u64,
                VIRT_BASE + 0x100_2000,
                0x100_2000,
                data.len() as u64,
                0x1000,
            ),
            (
                1,
                6,
                percpu_off as u64,
                0,
                0x100_3000,
                percpu.len() as u64,
                0x1000,
            ),
        ];
        if notes_in == NotesIn::Segment {
            phdrs.push((
                4,
                4,
                notes_off as u64,
                VIRT_BASE + 0x100_0200,
                0x100_0200,
                notes.len() as u64,
                notes.len() as u64,
            ));
        }
        for (i, p) in phdrs.iter().enumerate() {
            let o = EHDR + i * PHDR;
            put32(&mut f, o, p.0);
            put32(&mut f, o + 4, p.1);
            put64(&mut f, o + 8, p.2);
            put64(&mut f, o + 16, p.3);
            put64(&mut f, o + 24, p.4);
            put64(&mut f, o + 32, p.5);
            put64(&mut f, o + 40, p.6);
            put64(&mut f, o + 48, 0x1000);
        }
        f[notes_off..notes_off + notes.len()].copy_from_slice(notes);
        f[text_off..text_off + text.len()].copy_from_slice(&text);
        f[data_off..data_off + data.len()].copy_from_slice(&data);
        f[percpu_off..percpu_off + percpu.len()].copy_from_slice(&percpu);

        if notes_in == NotesIn::Section {
            // Section headers: the null section and one SHT_NOTE.
            put64(&mut f, 40, shdr_off as u64);
            put16(&mut f, 60, 2);
            f.resize(shdr_off + 2 * SHDR, 0);
            let o = shdr_off + SHDR;
            put32(&mut f, o + 4, 7); // SHT_NOTE
            put64(&mut f, o + 8, 2); // SHF_ALLOC
            put64(&mut f, o + 24, notes_off as u64);
            put64(&mut f, o + 32, notes.len() as u64);
            put64(&mut f, o + 48, 4);
        }
        f
    }

    /// A bzImage header around `payload` (already compressed and size-appended).
    pub fn build_bzimage(payload: &[u8], version: u16, setup_sects: u8) -> Vec<u8> {
        let pm_start = (usize::from(setup_sects) + 1) * 512;
        let payload_offset = 0x1c0usize;
        let mut f = vec![0u8; pm_start + payload_offset];
        f[0x1f1] = setup_sects;
        f[0x1fe] = 0x55;
        f[0x1ff] = 0xaa;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        f[0x248..0x24c].copy_from_slice(&(payload_offset as u32).to_le_bytes());
        f[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0u8; 64]); // trailing setup data / padding, as real images have
        f
    }

    /// An LZ4 legacy frame as `lz4 -l` / Linux's `cmd_lz4` makes it, with `block` bytes
    /// of input per block, plus an extra magic before block `repeat_magic_at` and the
    /// appended decompressed size.
    pub fn lz4_legacy(data: &[u8], block: usize, repeat_magic_at: Option<usize>) -> Vec<u8> {
        let mut out = 0x184c_2102u32.to_le_bytes().to_vec();
        for (i, chunk) in data.chunks(block).enumerate() {
            if repeat_magic_at == Some(i) {
                out.extend_from_slice(&0x184c_2102u32.to_le_bytes());
            }
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    /// Deterministic xorshift64* PRNG for the fuzz-style tests.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }
}

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
        let seeds: [&[u8]; 3] = [&elf, &elf_sections, &bz];
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
