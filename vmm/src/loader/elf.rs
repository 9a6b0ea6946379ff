//! The ELF vmlinux: loadable segments and where the notes are (libelf rules,
//! pv-boot.md §1.3). Header and table parsing is goblin's; the policy is ours.

use std::ops::Range;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_X86_64};
use goblin::elf::program_header::{PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE};
use goblin::elf::section_header::SHT_NOTE;
use goblin::elf::{Elf, ProgramHeader, SectionHeader};

use super::{LoaderError, Segment, MAX_IMAGE_SPAN};

const SIZEOF_EHDR64: usize = 64;
const SIZEOF_PHDR64: u16 = 56;
const SIZEOF_SHDR64: u16 = 64;

/// What the loader needs from the ELF.
#[derive(Debug)]
pub struct ElfImage {
    /// `e_entry` (physical for Linux; the ENTRY note is what counts).
    pub e_entry: u64,
    pub segments: Vec<Segment>,
    pub pstart: u64,
    pub pend: u64,
    /// File ranges of PT_NOTE segments.
    pub note_segments: Vec<Range<usize>>,
    /// File ranges of SHT_NOTE sections (fallback when the segments hold no Xen note).
    pub note_sections: Vec<Range<usize>>,
    /// File range of the first section named `__xen_guest` (the legacy fallback).
    pub xen_guest_section: Option<Range<usize>>,
}

pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn file_range(
    bytes: &[u8],
    offset: u64,
    size: u64,
    what: &str,
) -> Result<Range<usize>, LoaderError> {
    let bad = || {
        LoaderError::BadElf(format!(
            "{what} (file offset {offset:#x}, {size:#x} bytes) lies outside the {:#x}-byte file",
            bytes.len()
        ))
    };
    let end = offset.checked_add(size).ok_or_else(bad)?;
    if end > bytes.len() as u64 {
        return Err(bad());
    }
    // Both fit in the file length, hence in usize.
    Ok(offset as usize..end as usize)
}

/// Parse an ELF64 x86-64 kernel image.
pub fn parse(bytes: &[u8]) -> Result<ElfImage, LoaderError> {
    if bytes.len() < SIZEOF_EHDR64 {
        return Err(LoaderError::NotElf64X86(format!(
            "{} bytes is too short for an ELF64 header",
            bytes.len()
        )));
    }
    if bytes[EI_CLASS] != ELFCLASS64 {
        return Err(LoaderError::NotElf64X86(format!(
            "ELF class {} (need 2, 64-bit)",
            bytes[EI_CLASS]
        )));
    }
    if bytes[EI_DATA] != ELFDATA2LSB {
        return Err(LoaderError::NotElf64X86("big-endian ELF".into()));
    }
    let hdr = Elf::parse_header(bytes).map_err(|e| LoaderError::BadElf(e.to_string()))?;
    if hdr.e_machine != EM_X86_64 {
        return Err(LoaderError::NotElf64X86(format!(
            "machine {} (need {EM_X86_64}, x86-64)",
            hdr.e_machine
        )));
    }
    let ctx = Ctx::new(Container::Big, Endian::Little);

    if hdr.e_phnum == 0 {
        return Err(LoaderError::NoLoadableSegments);
    }
    if hdr.e_phentsize != SIZEOF_PHDR64 {
        return Err(LoaderError::BadElf(format!(
            "program header size {} (need {SIZEOF_PHDR64})",
            hdr.e_phentsize
        )));
    }
    let phtab = file_range(
        bytes,
        hdr.e_phoff,
        u64::from(hdr.e_phnum) * u64::from(SIZEOF_PHDR64),
        "program header table",
    )?;
    let phdrs = ProgramHeader::parse(bytes, phtab.start, usize::from(hdr.e_phnum), ctx)
        .map_err(|e| LoaderError::BadElf(format!("program headers: {e}")))?;

    let mut segments = Vec::new();
    let mut note_segments = Vec::new();
    let mut pstart = u64::MAX;
    let mut pend = 0u64;
    for (i, ph) in phdrs.iter().enumerate() {
        match ph.p_type {
            PT_LOAD if ph.p_flags & (PF_R | PF_W | PF_X) != 0 => {
                if ph.p_filesz > ph.p_memsz {
                    return Err(LoaderError::BadElf(format!(
                        "segment {i}: file size {:#x} exceeds memory size {:#x}",
                        ph.p_filesz, ph.p_memsz
                    )));
                }
                let range = file_range(bytes, ph.p_offset, ph.p_filesz, &format!("segment {i}"))?;
                let end = ph.p_paddr.checked_add(ph.p_memsz).ok_or_else(|| {
                    LoaderError::BadElf(format!(
                        "segment {i}: physical address {:#x} + size {:#x} overflows",
                        ph.p_paddr, ph.p_memsz
                    ))
                })?;
                pstart = pstart.min(ph.p_paddr);
                pend = pend.max(end);
                if pend - pstart > MAX_IMAGE_SPAN {
                    return Err(LoaderError::ImageTooLarge(pend - pstart));
                }
                segments.push(Segment {
                    paddr: ph.p_paddr,
                    data: bytes[range].to_vec(),
                    memsz: ph.p_memsz,
                });
            }
            // libelf skips a note segment at file offset 0: some binutils
            // versions leave p_offset unset.
            PT_NOTE if ph.p_offset != 0 => {
                note_segments.push(file_range(
                    bytes,
                    ph.p_offset,
                    ph.p_filesz,
                    &format!("note segment {i}"),
                )?);
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(LoaderError::NoLoadableSegments);
    }

    // Section headers only matter as a fallback for notes; a broken table is ignored
    // (the kernel loads from program headers), but reported.
    let (note_sections, xen_guest_section) = match sections(bytes, &hdr, ctx) {
        Ok(v) => v,
        Err(e) => {
            log::debug!("ignoring section headers: {e}");
            (Vec::new(), None)
        }
    };

    Ok(ElfImage {
        e_entry: hdr.e_entry,
        segments,
        pstart,
        pend,
        note_segments,
        note_sections,
        xen_guest_section,
    })
}

/// The SHT_NOTE sections and the `__xen_guest` section.
type Sections = (Vec<Range<usize>>, Option<Range<usize>>);

fn sections(bytes: &[u8], hdr: &goblin::elf::Header, ctx: Ctx) -> Result<Sections, LoaderError> {
    if hdr.e_shoff == 0 || hdr.e_shnum == 0 {
        return Ok((Vec::new(), None));
    }
    if hdr.e_shentsize != SIZEOF_SHDR64 {
        return Err(LoaderError::BadElf(format!(
            "section header size {}",
            hdr.e_shentsize
        )));
    }
    let shtab = file_range(
        bytes,
        hdr.e_shoff,
        u64::from(hdr.e_shnum) * u64::from(SIZEOF_SHDR64),
        "section header table",
    )?;
    let shdrs = SectionHeader::parse_from(bytes, shtab.start, usize::from(hdr.e_shnum), ctx)
        .map_err(|e| LoaderError::BadElf(format!("section headers: {e}")))?;
    let mut notes = Vec::new();
    // Section 0 is the null section; libelf starts at 1.
    for (i, sh) in shdrs.iter().enumerate().skip(1) {
        if sh.sh_type == SHT_NOTE {
            notes.push(file_range(
                bytes,
                sh.sh_offset,
                sh.sh_size,
                &format!("note section {i}"),
            )?);
        }
    }
    // Section names, for the legacy string; a broken name table only loses it.
    let names = shdrs
        .get(usize::from(hdr.e_shstrndx))
        .and_then(|s| file_range(bytes, s.sh_offset, s.sh_size, "section names").ok())
        .map_or(&[][..], |r| &bytes[r]);
    let xen_guest = shdrs
        .iter()
        .find(|sh| section_name(names, sh.sh_name) == Some(&b"__xen_guest"[..]))
        .and_then(|sh| {
            file_range(bytes, sh.sh_offset, sh.sh_size, "section __xen_guest")
                .map_err(|e| log::debug!("ignoring __xen_guest: {e}"))
                .ok()
        });
    Ok((notes, xen_guest))
}

/// The NUL-terminated name at `offset` in the section-name table.
fn section_name(names: &[u8], offset: usize) -> Option<&[u8]> {
    let tail = names.get(offset..)?;
    Some(&tail[..tail.iter().position(|&b| b == 0)?])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn segments_placed_by_paddr() {
        let img = parse(&build_elf(&linux_notes(None), NotesIn::Segment)).unwrap();
        assert_eq!(img.e_entry, TEXT_PADDR);
        let paddrs: Vec<u64> = img.segments.iter().map(|s| s.paddr).collect();
        assert_eq!(paddrs, vec![0x100_0000, 0x100_2000, 0x100_3000]);
        assert_eq!(img.pstart, 0x100_0000);
        assert_eq!(img.pend, 0x100_4000);
        assert_eq!(img.note_segments.len(), 1);
        assert!(img.note_sections.is_empty());
    }

    #[test]
    fn note_sections_found() {
        let img = parse(&build_elf(&linux_notes(None), NotesIn::Section)).unwrap();
        assert!(img.note_segments.is_empty());
        assert_eq!(img.note_sections.len(), 1);
    }

    #[test]
    fn segments_without_permissions_are_not_loaded() {
        let mut elf = build_elf(&[], NotesIn::Nowhere);
        // Clear p_flags of the second PT_LOAD.
        elf[64 + 56 + 4..64 + 56 + 8].copy_from_slice(&0u32.to_le_bytes());
        let img = parse(&elf).unwrap();
        assert_eq!(img.segments.len(), 2);
    }

    #[test]
    fn rejects_wrong_class_machine_and_bounds() {
        let good = build_elf(&[], NotesIn::Nowhere);
        let mut e = good.clone();
        e[4] = 1; // ELFCLASS32
        assert!(matches!(parse(&e), Err(LoaderError::NotElf64X86(_))));
        let mut e = good.clone();
        e[5] = 2; // big-endian
        assert!(matches!(parse(&e), Err(LoaderError::NotElf64X86(_))));
        let mut e = good.clone();
        e[18] = 3; // EM_386
        let err = parse(&e).unwrap_err();
        assert!(err.to_string().contains("x86-64"), "{err}");
        assert!(matches!(
            parse(&good[..40]),
            Err(LoaderError::NotElf64X86(_))
        ));
        // Program header table past the end.
        let mut e = good.clone();
        e[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&e), Err(LoaderError::BadElf(_))));
        // Segment data past the end.
        let mut e = good.clone();
        e[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // filesz
        e[64 + 40..64 + 48].copy_from_slice(&0x10_0000u64.to_le_bytes()); // memsz
        assert!(matches!(parse(&e), Err(LoaderError::BadElf(_))));
        // filesz > memsz.
        let mut e = good.clone();
        e[64 + 40..64 + 48].copy_from_slice(&1u64.to_le_bytes());
        assert!(matches!(parse(&e), Err(LoaderError::BadElf(_))));
        // paddr + memsz overflows.
        let mut e = good.clone();
        e[64 + 24..64 + 32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&e), Err(LoaderError::BadElf(_))));
        // A 2 GiB span is refused.
        let mut e = good.clone();
        e[64 + 40..64 + 48].copy_from_slice(&0x8000_0000u64.to_le_bytes());
        assert!(matches!(parse(&e), Err(LoaderError::ImageTooLarge(_))));
        // No program headers.
        let mut e = good;
        e[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(parse(&e), Err(LoaderError::NoLoadableSegments)));
    }
}
