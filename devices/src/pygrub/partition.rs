//! Partition tables: MBR (primary entries), GPT (behind a protective MBR), or none.
//!
//! Everything read here comes from an untrusted image: every offset and length is
//! checked against the disk size before use, and table sizes are capped.

use crate::disk::{DiskError, DiskImage};

const SECTOR: u64 = 512;
/// Most GPT entries we look at (the specification's minimum table holds 128).
const MAX_GPT_ENTRIES: u64 = 1024;
/// Largest GPT entry size we accept (the usual one is 128 bytes).
const MAX_GPT_ENTRY_SIZE: u64 = 4096;

/// A region of the disk that may hold a file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number; 0 for the whole (unpartitioned) disk.
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes (clamped to the disk end).
    pub size: u64,
    /// What the table says about it, e.g. "MBR type 0x83" or "GPT Linux filesystem".
    pub kind: String,
}

impl Partition {
    /// "partition N" or "whole disk", for messages.
    pub fn name(&self) -> String {
        if self.number == 0 {
            "whole disk".to_string()
        } else {
            format!("partition {}", self.number)
        }
    }
}

/// The regions to try, in pygrub's order: the active MBR partition first, then the
/// other primary partitions; all used GPT entries in table order; or the whole disk.
pub fn scan(img: &dyn DiskImage) -> Result<Vec<Partition>, DiskError> {
    let disk_size = img.size();
    if disk_size < SECTOR {
        return Ok(vec![whole(disk_size)]);
    }
    let mut mbr = [0u8; SECTOR as usize];
    img.read_at(&mut mbr, 0)?;
    let entries = match parse_mbr(&mbr) {
        Some(e) => e,
        None => return Ok(vec![whole(disk_size)]),
    };
    if entries.iter().any(|e| e.ptype == 0xee) {
        for sector in [512u64, 4096] {
            if let Some(parts) = read_gpt(img, sector)? {
                return Ok(parts);
            }
        }
        log::warn!("pygrub: protective MBR (type 0xee) but no valid GPT header; trying the disk as unpartitioned");
        return Ok(vec![whole(disk_size)]);
    }
    let mut parts = Vec::new();
    for e in &entries {
        if e.ptype == 0 || is_extended(e.ptype) || e.sectors == 0 {
            continue;
        }
        let start = u64::from(e.start_lba) * SECTOR;
        if start >= disk_size {
            log::warn!(
                "pygrub: MBR partition {} starts beyond the disk end; skipped",
                e.number
            );
            continue;
        }
        let size = (u64::from(e.sectors) * SECTOR).min(disk_size - start);
        let p = Partition {
            number: e.number,
            start,
            size,
            kind: format!("MBR type 0x{:02x}", e.ptype),
        };
        if e.active {
            parts.insert(0, p);
        } else {
            parts.push(p);
        }
    }
    if parts.is_empty() {
        // A boot signature with no usable entry: treat it as a file system at 0.
        parts.push(whole(disk_size));
    }
    Ok(parts)
}

fn whole(disk_size: u64) -> Partition {
    Partition {
        number: 0,
        start: 0,
        size: disk_size,
        kind: "no partition table".to_string(),
    }
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

#[derive(Debug)]
struct MbrEntry {
    number: u32,
    active: bool,
    ptype: u8,
    start_lba: u32,
    sectors: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// The four primary entries of an MBR, or None if sector 0 is not an MBR (no boot
/// signature, a file system's own boot sector, or status bytes other than 0/0x80).
fn parse_mbr(s: &[u8; 512]) -> Option<Vec<MbrEntry>> {
    if le16(s, 510) != 0xaa55 {
        return None;
    }
    // FAT and NTFS boot sectors carry the same signature; their "entries" are code.
    if &s[54..59] == b"FAT12" || &s[54..59] == b"FAT16" || &s[82..87] == b"FAT32" {
        return None;
    }
    if &s[3..11] == b"NTFS    " || &s[3..11] == b"EXFAT   " {
        return None;
    }
    let mut v = Vec::with_capacity(4);
    for i in 0..4 {
        let e = &s[446 + 16 * i..446 + 16 * (i + 1)];
        if e[0] != 0 && e[0] != 0x80 {
            return None;
        }
        v.push(MbrEntry {
            number: i as u32 + 1,
            active: e[0] == 0x80,
            ptype: e[4],
            start_lba: le32(e, 8),
            sectors: le32(e, 12),
        });
    }
    Some(v)
}

/// The used entries of a GPT with `sector`-byte sectors, or None if there is no valid
/// header at LBA 1.
fn read_gpt(img: &dyn DiskImage, sector: u64) -> Result<Option<Vec<Partition>>, DiskError> {
    let disk_size = img.size();
    if disk_size < 2 * sector {
        return Ok(None);
    }
    let mut hdr = [0u8; 92];
    img.read_at(&mut hdr, sector)?;
    if &hdr[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let entries_lba = le64(&hdr, 72);
    let count = u64::from(le32(&hdr, 80));
    let esize = u64::from(le32(&hdr, 84));
    if !(128..=MAX_GPT_ENTRY_SIZE).contains(&esize) || !esize.is_multiple_of(8) {
        log::warn!("pygrub: GPT entry size {esize} is invalid");
        return Ok(None);
    }
    if count > MAX_GPT_ENTRIES {
        log::warn!("pygrub: GPT claims {count} entries; reading the first {MAX_GPT_ENTRIES}");
    }
    let count = count.min(MAX_GPT_ENTRIES);
    let table_start = match entries_lba.checked_mul(sector) {
        Some(s) if entries_lba >= 2 && s < disk_size => s,
        _ => {
            log::warn!("pygrub: GPT entry table at LBA {entries_lba} is outside the disk");
            return Ok(None);
        }
    };
    // count and esize are capped, so this cannot overflow.
    let table_len = (count * esize).min(disk_size - table_start);
    let mut table = vec![0u8; table_len as usize];
    img.read_at(&mut table, table_start)?;

    let mut parts = Vec::new();
    for (i, e) in table.chunks_exact(esize as usize).enumerate() {
        let type_guid: [u8; 16] = e[0..16].try_into().unwrap_or([0; 16]);
        if type_guid == [0; 16] {
            continue;
        }
        let number = i as u32 + 1;
        let (first, last) = (le64(e, 32), le64(e, 40));
        let start = first.checked_mul(sector);
        let end = last.checked_add(1).and_then(|l| l.checked_mul(sector));
        let (start, end) = match (start, end) {
            (Some(s), Some(end)) if first <= last && s < disk_size => (s, end.min(disk_size)),
            _ => {
                log::warn!(
                    "pygrub: GPT partition {number} (LBA {first}..{last}) is outside the disk; skipped"
                );
                continue;
            }
        };
        let name = utf16_name(&e[56..128]);
        let mut kind = format!("GPT {}", gpt_type_name(&type_guid));
        if !name.is_empty() {
            kind.push_str(&format!(" \"{name}\""));
        }
        parts.push(Partition {
            number,
            start,
            size: end - start,
            kind,
        });
    }
    Ok(Some(parts))
}

fn utf16_name(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Formats a GPT GUID as text (the first three fields are little-endian on disk).
pub(crate) fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

fn gpt_type_name(g: &[u8; 16]) -> String {
    let s = guid_string(g);
    let name = match s.as_str() {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI system",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        _ => return format!("type {s}"),
    };
    name.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::disk::DiskError;
    use std::path::PathBuf;

    /// An in-memory disk for tests.
    pub struct MemDisk(pub Vec<u8>);

    impl DiskImage for MemDisk {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_only(&self) -> bool {
            true
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
            let end = offset.checked_add(buf.len() as u64);
            match end {
                Some(end) if end <= self.size() => {
                    buf.copy_from_slice(&self.0[offset as usize..end as usize]);
                    Ok(())
                }
                _ => Err(DiskError::OutOfRange {
                    path: PathBuf::from("mem"),
                    op: "read",
                    offset,
                    len: buf.len() as u64,
                    size: self.size(),
                }),
            }
        }
        fn write_at(&self, _: &[u8], _: u64) -> Result<(), DiskError> {
            Err(DiskError::ReadOnly {
                path: PathBuf::from("mem"),
                op: "write",
            })
        }
        fn flush(&self) -> Result<(), DiskError> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> Result<(), DiskError> {
            Ok(())
        }
        fn discard_supported(&self) -> bool {
            false
        }
        fn format(&self) -> &'static str {
            "raw"
        }
    }

    /// Writes MBR entry `i` (0-based).
    pub fn mbr_entry(d: &mut [u8], i: usize, active: bool, ptype: u8, lba: u32, sectors: u32) {
        let e = &mut d[446 + 16 * i..446 + 16 * (i + 1)];
        e[0] = if active { 0x80 } else { 0 };
        e[4] = ptype;
        e[8..12].copy_from_slice(&lba.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
    }

    #[test]
    fn unpartitioned() {
        let d = MemDisk(vec![0; 1 << 20]);
        let p = scan(&d).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].number, p[0].start, p[0].size), (0, 0, 1 << 20));
        assert_eq!(p[0].name(), "whole disk");
        // Tiny disks do not trip the reader.
        assert_eq!(scan(&MemDisk(vec![0; 100])).unwrap()[0].size, 100);
    }

    #[test]
    fn mbr_primary_extended_empty_active() {
        let mut d = vec![0u8; 8 << 20];
        mbr_entry(&mut d, 0, false, 0x83, 2048, 4096);
        mbr_entry(&mut d, 1, false, 0x05, 6144, 4096); // extended: ignored
        mbr_entry(&mut d, 2, true, 0x83, 10240, 1 << 30); // active, clamped to the disk
        mbr_entry(&mut d, 3, false, 0x83, 1 << 30, 10); // beyond the disk
        let p = scan(&MemDisk(d)).unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].number, 3, "active partition first");
        assert_eq!(p[0].start, 10240 * 512);
        assert_eq!(p[0].size, (8 << 20) - 10240 * 512);
        assert_eq!(p[1].number, 1);
        assert_eq!((p[1].start, p[1].size), (1 << 20, 2 << 20));
        assert_eq!(p[1].kind, "MBR type 0x83");
        assert_eq!(p[1].name(), "partition 1");
    }

    #[test]
    fn boot_signature_without_partitions_or_with_garbage() {
        let mut d = vec![0u8; 1 << 20];
        d[510] = 0x55;
        d[511] = 0xaa;
        assert_eq!(scan(&MemDisk(d.clone())).unwrap()[0].number, 0);
        d[446] = 0x42; // not a valid status byte: boot code, not a table
        d[450] = 0x83;
        assert_eq!(scan(&MemDisk(d.clone())).unwrap()[0].number, 0);
        d[446] = 0;
        d[82..87].copy_from_slice(b"FAT32");
        assert_eq!(scan(&MemDisk(d)).unwrap()[0].number, 0);
    }

    fn put_guid(dst: &mut [u8], text: &str) {
        let hex: Vec<u8> = text
            .bytes()
            .filter(|c| *c != b'-')
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let mut g = [0u8; 16];
        g[0..4].copy_from_slice(&[hex[3], hex[2], hex[1], hex[0]]);
        g[4..6].copy_from_slice(&[hex[5], hex[4]]);
        g[6..8].copy_from_slice(&[hex[7], hex[6]]);
        g[8..16].copy_from_slice(&hex[8..16]);
        dst[..16].copy_from_slice(&g);
    }

    /// A GPT disk (512-byte sectors) with the given (type, first, last, name) entries.
    pub fn gpt_disk(size: usize, parts: &[(&str, u64, u64, &str)]) -> Vec<u8> {
        let mut d = vec![0u8; size];
        mbr_entry(&mut d, 0, false, 0xee, 1, u32::MAX);
        let h = &mut d[512..512 + 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        for (i, (t, first, last, name)) in parts.iter().enumerate() {
            let e = &mut d[1024 + 128 * i..1024 + 128 * (i + 1)];
            put_guid(&mut e[0..16], t);
            e[16] = 1; // unique GUID: anything non-zero
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        d
    }

    #[test]
    fn gpt_entries() {
        let d = gpt_disk(
            4 << 20,
            &[
                ("21686148-6449-6E6F-744E-656564454649", 34, 2047, "bios"),
                ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 2048, 6143, "root"),
                ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 6144, 1 << 40, "big"),
                (
                    "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                    1 << 40,
                    1 << 41,
                    "gone",
                ),
                (
                    "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                    u64::MAX,
                    u64::MAX,
                    "ovf",
                ),
            ],
        );
        let p = scan(&MemDisk(d)).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].kind, "GPT BIOS boot \"bios\"");
        assert_eq!(p[1].number, 2);
        assert_eq!((p[1].start, p[1].size), (1 << 20, 2 << 20));
        assert_eq!(p[1].kind, "GPT Linux filesystem \"root\"");
        assert_eq!(p[2].start, 6144 * 512);
        assert_eq!(p[2].size, (4 << 20) - 6144 * 512, "clamped");
    }

    #[test]
    fn gpt_hostile_header() {
        let mut d = gpt_disk(1 << 20, &[]);
        // Entry table far beyond the disk.
        d[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(scan(&MemDisk(d.clone())).unwrap()[0].number, 0);
        // Absurd counts and sizes.
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(scan(&MemDisk(d.clone())).unwrap().is_empty());
        d[512 + 84..512 + 88].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&MemDisk(d.clone())).unwrap()[0].number, 0);
        // Table running past the disk end is cut short.
        let mut d = gpt_disk(4096, &[]);
        d[512 + 72..512 + 80].copy_from_slice(&7u64.to_le_bytes());
        assert!(scan(&MemDisk(d)).unwrap().is_empty());
    }

    #[test]
    fn guid_text() {
        let mut g = [0u8; 16];
        put_guid(&mut g, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(guid_string(&g), "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    }
}
