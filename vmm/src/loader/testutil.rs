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
    let put16 = |f: &mut Vec<u8>, o: usize, v: u16| f[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |f: &mut Vec<u8>, o: usize, v: u32| f[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |f: &mut Vec<u8>, o: usize, v: u64| f[o..o + 8].copy_from_slice(&v.to_le_bytes());
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

/// Start of the freestanding test kernel: 1 MiB, linked with vaddr == paddr.
pub const LOW_TEXT: u64 = 0x10_0000;

/// A freestanding kernel as Mini-OS or the conformance guests link it: text at
/// 1 MiB (vaddr == paddr, 0x2000 bytes in memory), data at 1 MiB + 8 KiB,
/// `e_entry` at the start of the text, the notes in a PT_NOTE segment (none
/// when empty), and section headers naming a `__xen_guest` section when
/// `xen_guest` is given.
pub fn build_freestanding(notes: &[u8], xen_guest: Option<&[u8]>) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const SHDR: usize = 64;
    let put = |f: &mut Vec<u8>, o: usize, v: &[u8]| f[o..o + v.len()].copy_from_slice(v);
    let text: Vec<u8> = (0..0x300u32).map(|i| (i * 5) as u8).collect();
    let data = vec![0x77u8; 0x80];
    let nphdr = if notes.is_empty() { 2 } else { 3 };
    let notes_off = EHDR + nphdr * PHDR;
    assert!(notes_off + notes.len() <= 0x1000, "test notes too long");
    let text_off = 0x1000usize;
    let data_off = text_off + text.len();
    let guest_off = data_off + data.len();
    let guest = xen_guest.unwrap_or_default();
    let names = b"\0.shstrtab\0__xen_guest\0";
    let names_off = guest_off + guest.len();
    let shdr_off = (names_off + names.len() + 7) & !7;
    let nshdr = if xen_guest.is_some() { 3 } else { 2 };
    let mut f = vec![0u8; shdr_off + nshdr * SHDR];

    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &LOW_TEXT.to_le_bytes()); // e_entry
    put(&mut f, 32, &(EHDR as u64).to_le_bytes());
    put(&mut f, 40, &(shdr_off as u64).to_le_bytes());
    put(&mut f, 52, &(EHDR as u16).to_le_bytes());
    put(&mut f, 54, &(PHDR as u16).to_le_bytes());
    put(&mut f, 56, &(nphdr as u16).to_le_bytes());
    put(&mut f, 58, &(SHDR as u16).to_le_bytes());
    put(&mut f, 60, &(nshdr as u16).to_le_bytes());
    put(&mut f, 62, &1u16.to_le_bytes()); // e_shstrndx

    // (type, flags, offset, addr, filesz, memsz)
    let phdrs = [
        (1u32, 5u32, text_off, LOW_TEXT, text.len(), 0x2000u64),
        (1, 6, data_off, LOW_TEXT + 0x2000, data.len(), 0x1000),
        (4, 4, notes_off, 0, notes.len(), notes.len() as u64),
    ];
    for (i, p) in phdrs.iter().take(nphdr).enumerate() {
        let o = EHDR + i * PHDR;
        put(&mut f, o, &p.0.to_le_bytes());
        put(&mut f, o + 4, &p.1.to_le_bytes());
        put(&mut f, o + 8, &(p.2 as u64).to_le_bytes());
        put(&mut f, o + 16, &p.3.to_le_bytes());
        put(&mut f, o + 24, &p.3.to_le_bytes());
        put(&mut f, o + 32, &(p.4 as u64).to_le_bytes());
        put(&mut f, o + 40, &p.5.to_le_bytes());
        put(&mut f, o + 48, &0x1000u64.to_le_bytes());
    }
    put(&mut f, notes_off, notes);
    put(&mut f, text_off, &text);
    put(&mut f, data_off, &data);
    put(&mut f, guest_off, guest);
    put(&mut f, names_off, names);
    // Section 1: the name table (SHT_STRTAB); 2: __xen_guest (SHT_PROGBITS).
    let sections = [
        (1u32, 3u32, names_off, names.len()),
        (11, 1, guest_off, guest.len()),
    ];
    for (i, s) in sections.iter().take(nshdr - 1).enumerate() {
        let o = shdr_off + (i + 1) * SHDR;
        put(&mut f, o, &s.0.to_le_bytes());
        put(&mut f, o + 4, &s.1.to_le_bytes());
        put(&mut f, o + 24, &(s.2 as u64).to_le_bytes());
        put(&mut f, o + 32, &(s.3 as u64).to_le_bytes());
        put(&mut f, o + 48, &1u64.to_le_bytes());
    }
    f
}

/// The notes of a freestanding kernel: GUEST_OS, LOADER=generic, XEN_VERSION
/// and a HYPERCALL_PAGE at 1 MiB + 4 KiB; no VIRT_BASE, PADDR_OFFSET or ENTRY.
pub fn freestanding_notes() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(xen(XEN_ELFNOTE_GUEST_OS, b"Mini-OS\0"));
    v.extend(xen(XEN_ELFNOTE_LOADER, b"generic\0"));
    v.extend(xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"));
    v.extend(xen(
        XEN_ELFNOTE_HYPERCALL_PAGE,
        &(LOW_TEXT + 0x1000).to_le_bytes(),
    ));
    v
}
