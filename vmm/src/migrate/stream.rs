//! Xen's save/migration stream, as xl writes it: xl's save-file header
//! (with the domain configuration), libxl's container (libxl migration
//! stream v2) and inside it libxc's stream (libxc migration stream v3).
//! Formats: Xen's docs/specs/libxc-migration-stream.pandoc,
//! libxl-migration-stream.pandoc and tools/xl/xl.h.
//!
//! Everything here is pure encoding and decoding over `Read`/`Write`; the
//! reader bounds every length it is given (a stream is untrusted input).

use std::io::{Read, Write};

use super::MigrateError;

/// xl's save-file magic (`savefileheader_magic`, 32 bytes).
pub const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
/// xl's byte-order marker, written in the host's (little-endian) order.
pub const XL_BYTEORDER: u32 = 0x0102_0304;
pub const XL_FLAG_JSON: u32 = 1 << 0;
pub const XL_FLAG_STREAM_V2: u32 = 1 << 1;
/// The largest configuration we accept in an xl header.
const MAX_CONFIG: u32 = 1 << 20;

/// libxl stream: "LibxlFmt", version 2.
pub const LIBXL_IDENT: u64 = 0x4c69_6278_6c46_6d74;
pub const LIBXL_VERSION: u32 = 2;
pub mod libxl_rec {
    pub const END: u32 = 0;
    pub const LIBXC_CONTEXT: u32 = 1;
    pub const EMULATOR_XENSTORE_DATA: u32 = 2;
    pub const EMULATOR_CONTEXT: u32 = 3;
    pub const CHECKPOINT_END: u32 = 4;
}

/// libxc stream: marker, "XENF", version 3.
pub const XC_MARKER: u64 = u64::MAX;
pub const XC_ID: u32 = 0x5845_4e46;
pub const XC_VERSION: u32 = 3;
pub const DHDR_TYPE_X86_PV: u32 = 1;
pub mod rec {
    pub const END: u32 = 0x00;
    pub const PAGE_DATA: u32 = 0x01;
    pub const X86_PV_INFO: u32 = 0x02;
    pub const X86_PV_P2M_FRAMES: u32 = 0x03;
    pub const X86_PV_VCPU_BASIC: u32 = 0x04;
    pub const X86_PV_VCPU_EXTENDED: u32 = 0x05;
    pub const X86_PV_VCPU_XSAVE: u32 = 0x06;
    pub const SHARED_INFO: u32 = 0x07;
    pub const X86_TSC_INFO: u32 = 0x08;
    pub const X86_PV_VCPU_MSRS: u32 = 0x0c;
    pub const VERIFY: u32 = 0x0d;
    pub const STATIC_DATA_END: u32 = 0x10;
    pub const X86_CPUID_POLICY: u32 = 0x11;
    pub const X86_MSR_POLICY: u32 = 0x12;
    /// Bit 31: an optional record, which a reader may skip.
    pub const OPTIONAL: u32 = 0x8000_0000;
}

/// XEN_DOMCTL_PFINFO_* types as the stream carries them (bits 63..60).
pub mod pfinfo {
    pub const NOTAB: u8 = 0x0;
    pub const L4TAB: u8 = 0x4;
    pub const PIN: u8 = 0x8;
    pub const BROKEN: u8 = 0xd;
    pub const XALLOC: u8 = 0xe;
    pub const XTAB: u8 = 0xf;

    /// A type the stream may carry (0x5..=0x8 are reserved).
    pub fn valid(t: u8) -> bool {
        t <= L4TAB || (0x9..=XTAB).contains(&t)
    }
    /// The type has page contents in the record.
    pub fn has_data(t: u8) -> bool {
        !matches!(t, BROKEN | XALLOC | XTAB)
    }
}

pub const PAGE_SIZE: usize = 4096;
const PFN_MASK: u64 = (1 << 52) - 1;
/// The largest record body we accept: a PAGE_DATA record of 1024 pages
/// (what libxc writes) and its PFN array, with room to spare.
pub const MAX_BODY: u32 = 8 << 20;
/// Most pages in one PAGE_DATA record (libxc's MAX_BATCH_SIZE).
pub const MAX_BATCH: usize = 1024;

fn io(e: std::io::Error) -> MigrateError {
    MigrateError::Io(e)
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<(), MigrateError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            MigrateError::Truncated
        } else {
            MigrateError::Io(e)
        }
    })
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// xl's header and its optional data: the configuration (JSON, with its
/// trailing NUL as xl writes it).
pub fn write_xl_header(w: &mut dyn Write, config_json: &str) -> Result<(), MigrateError> {
    let mut cfg = config_json.as_bytes().to_vec();
    cfg.push(0);
    let mut h = Vec::with_capacity(48 + cfg.len() + 4);
    h.extend_from_slice(XL_MAGIC);
    h.extend_from_slice(&XL_BYTEORDER.to_le_bytes());
    h.extend_from_slice(&(XL_FLAG_STREAM_V2 | XL_FLAG_JSON).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&(4 + cfg.len() as u32).to_le_bytes());
    h.extend_from_slice(&(cfg.len() as u32).to_le_bytes());
    h.extend_from_slice(&cfg);
    w.write_all(&h).map_err(io)
}

/// Read xl's header; returns the configuration text (without its NUL).
pub fn read_xl_header(r: &mut dyn Read) -> Result<String, MigrateError> {
    let mut h = [0u8; 48];
    read_exact(r, &mut h)?;
    if &h[..32] != XL_MAGIC {
        return Err(MigrateError::Format(
            "not an xl save file (bad magic)".into(),
        ));
    }
    if le32(&h, 32) != XL_BYTEORDER {
        return Err(MigrateError::Format(
            "save file of another byte order".into(),
        ));
    }
    let mandatory = le32(&h, 36);
    if mandatory & !(XL_FLAG_JSON | XL_FLAG_STREAM_V2) != 0 {
        return Err(MigrateError::Format(format!(
            "unknown mandatory flags {mandatory:#x}"
        )));
    }
    if mandatory & XL_FLAG_STREAM_V2 == 0 {
        return Err(MigrateError::Format(
            "legacy (pre-v2) save stream: not supported".into(),
        ));
    }
    if le32(&h, 40) != 0 {
        return Err(MigrateError::Format("unknown optional flags".into()));
    }
    let opt_len = le32(&h, 44);
    if opt_len > MAX_CONFIG + 4 {
        return Err(MigrateError::Format("configuration too large".into()));
    }
    let mut opt = vec![0u8; opt_len as usize];
    read_exact(r, &mut opt)?;
    if opt.len() < 4 {
        return Ok(String::new());
    }
    let n = (le32(&opt, 0) as usize).min(opt.len() - 4);
    let cfg = &opt[4..4 + n];
    let cfg = cfg.strip_suffix(&[0]).unwrap_or(cfg);
    if mandatory & XL_FLAG_JSON == 0 && !cfg.is_empty() {
        return Err(MigrateError::Format(
            "the save file's configuration is not JSON (xl.cfg text): not supported".into(),
        ));
    }
    String::from_utf8(cfg.to_vec())
        .map_err(|_| MigrateError::Format("configuration is not UTF-8".into()))
}

pub fn write_libxl_header(w: &mut dyn Write) -> Result<(), MigrateError> {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&LIBXL_IDENT.to_be_bytes());
    h[8..12].copy_from_slice(&LIBXL_VERSION.to_be_bytes());
    w.write_all(&h).map_err(io)
}

pub fn read_libxl_header(r: &mut dyn Read) -> Result<(), MigrateError> {
    let mut h = [0u8; 16];
    read_exact(r, &mut h)?;
    let ident = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
    let version = u32::from_be_bytes(h[8..12].try_into().unwrap_or([0; 4]));
    let options = u32::from_be_bytes(h[12..16].try_into().unwrap_or([0; 4]));
    if ident != LIBXL_IDENT {
        return Err(MigrateError::Format("not a libxl stream".into()));
    }
    if version != LIBXL_VERSION {
        return Err(MigrateError::Format(format!(
            "libxl stream version {version} (2 is supported)"
        )));
    }
    if options & 1 != 0 {
        return Err(MigrateError::Format("big-endian libxl stream".into()));
    }
    Ok(())
}

/// libxc's image header (big-endian) and domain header (x86 PV, 4 KiB pages).
pub fn write_xc_headers(w: &mut dyn Write, xen: (u32, u32)) -> Result<(), MigrateError> {
    let mut h = [0u8; 40];
    h[..8].copy_from_slice(&XC_MARKER.to_be_bytes());
    h[8..12].copy_from_slice(&XC_ID.to_be_bytes());
    h[12..16].copy_from_slice(&XC_VERSION.to_be_bytes());
    // options (little-endian) and reserved: zero.
    h[24..28].copy_from_slice(&DHDR_TYPE_X86_PV.to_le_bytes());
    h[28..30].copy_from_slice(&12u16.to_le_bytes());
    h[32..36].copy_from_slice(&xen.0.to_le_bytes());
    h[36..40].copy_from_slice(&xen.1.to_le_bytes());
    w.write_all(&h).map_err(io)
}

pub fn read_xc_headers(r: &mut dyn Read) -> Result<(u32, u32), MigrateError> {
    let mut h = [0u8; 40];
    read_exact(r, &mut h)?;
    let be32 = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap_or([0; 4]));
    if h[..8] != XC_MARKER.to_be_bytes() {
        return Err(MigrateError::Format(
            "legacy libxc stream (marker not all ones): not supported".into(),
        ));
    }
    if be32(8) != XC_ID {
        return Err(MigrateError::Format("not a libxc stream (id)".into()));
    }
    let version = be32(12);
    if !(2..=3).contains(&version) {
        return Err(MigrateError::Format(format!(
            "libxc stream version {version} (2 and 3 are supported)"
        )));
    }
    if u16::from_be_bytes([h[16], h[17]]) & 1 != 0 {
        return Err(MigrateError::Format("big-endian libxc stream".into()));
    }
    if le32(&h, 24) != DHDR_TYPE_X86_PV {
        return Err(MigrateError::Format(format!(
            "domain type {} (only x86 PV, 1, is supported)",
            le32(&h, 24)
        )));
    }
    if u16::from_le_bytes([h[28], h[29]]) != 12 {
        return Err(MigrateError::Format("page size is not 4 KiB".into()));
    }
    Ok((le32(&h, 32), le32(&h, 36)))
}

/// One record: header, body, zero padding to 8 bytes. The libxl and libxc
/// layers share this framing.
pub fn write_record(w: &mut dyn Write, ty: u32, body: &[u8]) -> Result<(), MigrateError> {
    let len =
        u32::try_from(body.len()).map_err(|_| MigrateError::Format("record too long".into()))?;
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&ty.to_le_bytes());
    h[4..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&h).map_err(io)?;
    w.write_all(body).map_err(io)?;
    let pad = (8 - body.len() % 8) % 8;
    w.write_all(&[0u8; 8][..pad]).map_err(io)
}

/// A record as read: its type and body (padding dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ty: u32,
    pub body: Vec<u8>,
}

pub fn read_record(r: &mut dyn Read) -> Result<Record, MigrateError> {
    let mut h = [0u8; 8];
    read_exact(r, &mut h)?;
    let ty = le32(&h, 0);
    let len = le32(&h, 4);
    if len > MAX_BODY {
        return Err(MigrateError::Format(format!(
            "record {ty:#x} of {len} bytes (at most {MAX_BODY})"
        )));
    }
    let padded = (len as usize).div_ceil(8) * 8;
    let mut body = vec![0u8; padded];
    read_exact(r, &mut body)?;
    body.truncate(len as usize);
    Ok(Record { ty, body })
}

/// A PAGE_DATA record: `pages` are (pfn, type) pairs; `data` holds one
/// page per entry whose type has contents, in order.
pub fn page_data_body(pages: &[(u64, u8)], data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + pages.len() * 8 + data.len());
    b.extend_from_slice(&(pages.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for &(pfn, ty) in pages {
        b.extend_from_slice(&((pfn & PFN_MASK) | (u64::from(ty & 0xf) << 60)).to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// Decode a PAGE_DATA body: the (pfn, type) entries and the offset in
/// `body` of each entry's page (None for types without contents).
pub fn parse_page_data(body: &[u8]) -> Result<Vec<(u64, u8, Option<usize>)>, MigrateError> {
    let bad = |m: &str| MigrateError::Format(format!("PAGE_DATA: {m}"));
    if body.len() < 8 {
        return Err(bad("short record"));
    }
    let count = le32(body, 0) as usize;
    if count == 0 || count > MAX_BATCH {
        return Err(bad("page count out of range"));
    }
    let pfns_end = 8 + count * 8;
    if body.len() < pfns_end {
        return Err(bad("PFN array truncated"));
    }
    let mut at = pfns_end;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = le64(body, 8 + i * 8);
        let ty = (e >> 60) as u8;
        if !pfinfo::valid(ty) {
            return Err(bad(&format!("unknown page type {ty:#x}")));
        }
        if (e >> 52) & 0xff != 0 {
            return Err(bad("reserved PFN bits set"));
        }
        let off = if pfinfo::has_data(ty) {
            let o = at;
            at += PAGE_SIZE;
            Some(o)
        } else {
            None
        };
        out.push((e & PFN_MASK, ty, off));
    }
    if at != body.len() {
        return Err(bad("page data does not match the PFN array"));
    }
    Ok(out)
}

/// X86_PV_INFO: 64-bit guest, 4-level page tables.
pub fn pv_info_body() -> Vec<u8> {
    let mut b = vec![0u8; 8];
    b[0] = 8;
    b[1] = 4;
    b
}

pub fn check_pv_info(body: &[u8]) -> Result<(), MigrateError> {
    match body {
        [8, 4, ..] if body.len() == 8 => Ok(()),
        [w, l, ..] => Err(MigrateError::Format(format!(
            "guest width {w}, {l} page-table levels: only 64-bit (8, 4) PV guests are supported"
        ))),
        _ => Err(MigrateError::Format("short X86_PV_INFO".into())),
    }
}

/// X86_PV_VCPU_* records: vcpu id, reserved, the blob.
pub fn vcpu_body(id: u32, blob: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + blob.len());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(blob);
    b
}

pub fn parse_vcpu_body(body: &[u8]) -> Result<(u32, &[u8]), MigrateError> {
    if body.len() < 8 {
        return Err(MigrateError::Format("short vCPU record".into()));
    }
    Ok((le32(body, 0), &body[8..]))
}

/// X86_TSC_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TscInfo {
    pub mode: u32,
    pub khz: u32,
    pub nsec: u64,
    pub incarnation: u32,
}

impl TscInfo {
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.mode.to_le_bytes());
        b.extend_from_slice(&self.khz.to_le_bytes());
        b.extend_from_slice(&self.nsec.to_le_bytes());
        b.extend_from_slice(&self.incarnation.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8]) -> Result<TscInfo, MigrateError> {
        if b.len() != 24 {
            return Err(MigrateError::Format("X86_TSC_INFO is not 24 bytes".into()));
        }
        Ok(TscInfo {
            mode: le32(b, 0),
            khz: le32(b, 4),
            nsec: le64(b, 8),
            incarnation: le32(b, 16),
        })
    }
}

/// X86_PV_P2M_FRAMES: first and last PFN covered and the P2M's frames.
pub fn p2m_frames_body(end_pfn: u32, frames: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + frames.len() * 8);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&end_pfn.to_le_bytes());
    for f in frames {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_header_round_trips_and_matches_xl_layout() {
        let mut v = Vec::new();
        write_xl_header(&mut v, "{\"name\":\"a\"}").unwrap();
        assert_eq!(&v[..32], XL_MAGIC);
        // byteorder, mandatory flags (JSON | v2), optional flags, optional length
        assert_eq!(le32(&v, 32), 0x0102_0304);
        assert_eq!(le32(&v, 36), 3);
        assert_eq!(le32(&v, 44) as usize, v.len() - 48);
        assert_eq!(*v.last().unwrap(), 0, "xl keeps the config's NUL");
        assert_eq!(read_xl_header(&mut &v[..]).unwrap(), "{\"name\":\"a\"}");
    }

    #[test]
    fn xl_header_refuses_bad_input() {
        let mut v = Vec::new();
        write_xl_header(&mut v, "{}").unwrap();
        let mut bad = v.clone();
        bad[0] ^= 1;
        assert!(read_xl_header(&mut &bad[..]).is_err());
        let mut legacy = v.clone();
        legacy[36] = 1; // JSON but not stream v2
        assert!(read_xl_header(&mut &legacy[..]).is_err());
        let mut huge = v.clone();
        huge[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_xl_header(&mut &huge[..]).is_err());
        assert!(matches!(
            read_xl_header(&mut &v[..40]),
            Err(MigrateError::Truncated)
        ));
    }

    #[test]
    fn libxc_headers_are_big_endian_then_native() {
        let mut v = Vec::new();
        write_xc_headers(&mut v, (4, 17)).unwrap();
        assert_eq!(&v[..8], &[0xff; 8]);
        assert_eq!(&v[8..12], b"XENF");
        assert_eq!(&v[12..16], &[0, 0, 0, 3]);
        assert_eq!(le32(&v, 24), 1);
        assert_eq!(read_xc_headers(&mut &v[..]).unwrap(), (4, 17));
        let mut hvm = v.clone();
        hvm[24] = 2;
        assert!(read_xc_headers(&mut &hvm[..]).is_err());
        let mut legacy = v.clone();
        legacy[0] = 0;
        assert!(read_xc_headers(&mut &legacy[..]).is_err());
        let mut l = Vec::new();
        write_libxl_header(&mut l).unwrap();
        assert_eq!(&l[..8], b"LibxlFmt");
        read_libxl_header(&mut &l[..]).unwrap();
    }

    #[test]
    fn records_are_padded_to_eight_bytes() {
        let mut v = Vec::new();
        write_record(&mut v, rec::X86_PV_INFO, &[8, 4, 0]).unwrap();
        write_record(&mut v, rec::END, &[]).unwrap();
        assert_eq!(v.len(), 16 + 8);
        let mut r = &v[..];
        let a = read_record(&mut r).unwrap();
        assert_eq!(
            (a.ty, a.body.as_slice()),
            (rec::X86_PV_INFO, &[8u8, 4, 0][..])
        );
        assert_eq!(read_record(&mut r).unwrap().ty, rec::END);
        assert!(matches!(read_record(&mut r), Err(MigrateError::Truncated)));
    }

    #[test]
    fn oversized_record_is_refused_before_allocation() {
        let mut v = Vec::new();
        v.extend_from_slice(&rec::PAGE_DATA.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_record(&mut &v[..]),
            Err(MigrateError::Format(_))
        ));
    }

    #[test]
    fn page_data_round_trips_with_types() {
        let page = vec![0xabu8; PAGE_SIZE];
        let mut data = page.clone();
        data.extend_from_slice(&page);
        let entries = [
            (5, pfinfo::NOTAB),
            (6, pfinfo::XTAB),
            (7, pfinfo::L4TAB | pfinfo::PIN),
        ];
        let b = page_data_body(&entries, &data);
        let p = parse_page_data(&b).unwrap();
        assert_eq!(p[0], (5, 0, Some(8 + 24)));
        assert_eq!(p[1], (6, 0xf, None));
        assert_eq!(p[2], (7, 0xc, Some(8 + 24 + PAGE_SIZE)));
    }

    #[test]
    fn page_data_refuses_bad_types_and_sizes() {
        let page = vec![0u8; PAGE_SIZE];
        // Reserved type 0x5.
        assert!(parse_page_data(&page_data_body(&[(1, 5)], &page)).is_err());
        // Missing page contents.
        assert!(parse_page_data(&page_data_body(&[(1, 0)], &[])).is_err());
        // Extra contents.
        assert!(parse_page_data(&page_data_body(&[(1, pfinfo::XTAB)], &page)).is_err());
        // Count zero or over the batch size.
        assert!(parse_page_data(&page_data_body(&[], &[])).is_err());
        let mut b = page_data_body(&[(1, pfinfo::XTAB)], &[]);
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_page_data(&b).is_err());
        // Reserved PFN bits.
        let mut b = page_data_body(&[(1, pfinfo::XTAB)], &[]);
        b[14] = 0x10;
        assert!(parse_page_data(&b).is_err());
    }

    #[test]
    fn small_records_round_trip() {
        check_pv_info(&pv_info_body()).unwrap();
        assert!(check_pv_info(&[4, 3, 0, 0, 0, 0, 0, 0]).is_err());
        let t = TscInfo {
            mode: 0,
            khz: 2_000_000,
            nsec: 123,
            incarnation: 1,
        };
        assert_eq!(TscInfo::parse(&t.body()).unwrap(), t);
        let b = vcpu_body(3, &[1, 2]);
        assert_eq!(parse_vcpu_body(&b).unwrap(), (3, &[1u8, 2][..]));
        assert!(parse_vcpu_body(&[0; 4]).is_err());
        assert_eq!(p2m_frames_body(1023, &[9, 10]).len(), 24);
    }
}
