//! The bzImage setup header (Documentation/arch/x86/boot.rst), as far as Xen's
//! `xg_dom_bzimageloader.c` uses it: find the compressed payload.

use super::LoaderError;

const OFF_SETUP_SECTS: usize = 0x1f1;
const OFF_HEADER: usize = 0x202;
const OFF_VERSION: usize = 0x206;
const OFF_PAYLOAD_OFFSET: usize = 0x248;
const OFF_PAYLOAD_LENGTH: usize = 0x24c;
/// Bytes of header needed to read `payload_length`.
const HEADER_END: usize = 0x250;
/// Boot protocol 2.08 introduced `payload_offset`/`payload_length`.
pub const MIN_VERSION: u16 = 0x0208;

/// The setup-header fields the loader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    pub setup_sects: u8,
    pub version: u16,
    pub payload_offset: u32,
    pub payload_length: u32,
}

impl SetupHeader {
    /// File offset of the payload: `(setup_sects + 1) * 512 + payload_offset`.
    pub fn payload_file_offset(&self) -> u64 {
        (u64::from(self.setup_sects) + 1) * 512 + u64::from(self.payload_offset)
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Whether `bytes` carries the "HdrS" setup-header signature.
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(OFF_HEADER..OFF_HEADER + 4) == Some(b"HdrS")
}

/// Parse the setup header. `Ok(None)` if this is not a bzImage at all.
pub fn parse_header(bytes: &[u8]) -> Result<Option<SetupHeader>, LoaderError> {
    if !is_bzimage(bytes) {
        return Ok(None);
    }
    let truncated = || {
        LoaderError::BzImageTruncated(format!(
            "{} bytes, header needs {HEADER_END:#x}",
            bytes.len()
        ))
    };
    let version = le16(bytes, OFF_VERSION).ok_or_else(truncated)?;
    if version < MIN_VERSION {
        return Err(LoaderError::BzImageProtocol(version));
    }
    if bytes.len() < HEADER_END {
        return Err(truncated());
    }
    Ok(Some(SetupHeader {
        setup_sects: bytes[OFF_SETUP_SECTS],
        version,
        payload_offset: le32(bytes, OFF_PAYLOAD_OFFSET).ok_or_else(truncated)?,
        payload_length: le32(bytes, OFF_PAYLOAD_LENGTH).ok_or_else(truncated)?,
    }))
}

/// The compressed payload of a bzImage, or `Ok(None)` if `bytes` is not a bzImage.
pub fn payload(bytes: &[u8]) -> Result<Option<&[u8]>, LoaderError> {
    let Some(hdr) = parse_header(bytes)? else {
        return Ok(None);
    };
    let offset = hdr.payload_file_offset();
    let length = u64::from(hdr.payload_length);
    let file_len = bytes.len() as u64;
    let bad = || LoaderError::PayloadBounds {
        offset,
        length,
        file_len,
    };
    // Xen: offset < size and offset + length <= size. An empty payload is useless too.
    if offset >= file_len || length == 0 {
        return Err(bad());
    }
    let end = offset.checked_add(length).ok_or_else(bad)?;
    if end > file_len {
        return Err(bad());
    }
    let start = usize::try_from(offset).map_err(|_| bad())?;
    let end = usize::try_from(end).map_err(|_| bad())?;
    log::debug!(
        "bzImage protocol {:#06x}, setup_sects {}, payload at {start:#x}, {length:#x} bytes",
        hdr.version,
        hdr.setup_sects
    );
    Ok(bytes.get(start..end))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::build_bzimage;
    use super::*;

    #[test]
    fn parses_header_and_finds_payload() {
        let img = build_bzimage(b"PAYLOAD!", 0x020f, 39);
        let hdr = parse_header(&img).unwrap().unwrap();
        assert_eq!(
            hdr,
            SetupHeader {
                setup_sects: 39,
                version: 0x020f,
                payload_offset: 0x1c0,
                payload_length: 8
            }
        );
        assert_eq!(hdr.payload_file_offset(), 40 * 512 + 0x1c0);
        assert_eq!(payload(&img).unwrap(), Some(&b"PAYLOAD!"[..]));
    }

    #[test]
    fn oldest_accepted_protocol_is_2_08() {
        let img = build_bzimage(b"xx", 0x0208, 4);
        assert_eq!(payload(&img).unwrap(), Some(&b"xx"[..]));
        let img = build_bzimage(b"xx", 0x0206, 4);
        let err = payload(&img).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bzImage protocol 0x0206 too old: Xen needs >= 0x0208"
        );
    }

    #[test]
    fn not_a_bzimage() {
        assert!(parse_header(b"").unwrap().is_none());
        assert!(parse_header(&[0u8; 4096]).unwrap().is_none());
        assert!(payload(&[0xffu8; 0x300]).unwrap().is_none());
    }

    #[test]
    fn truncated_header() {
        let img = build_bzimage(b"xx", 0x020f, 4);
        // Signature present but cut before the version / before payload_length.
        assert!(matches!(
            payload(&img[..0x207]),
            Err(LoaderError::BzImageTruncated(_))
        ));
        assert!(matches!(
            payload(&img[..0x24e]),
            Err(LoaderError::BzImageTruncated(_))
        ));
    }

    #[test]
    fn payload_out_of_bounds() {
        let mut img = build_bzimage(b"0123456789", 0x020f, 4);
        // Length past the end of the file.
        img[0x24c..0x250].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(matches!(
            payload(&img),
            Err(LoaderError::PayloadBounds { .. })
        ));
        // Offset past the end of the file.
        img[0x24c..0x250].copy_from_slice(&4u32.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(matches!(
            payload(&img),
            Err(LoaderError::PayloadBounds { .. })
        ));
        // Huge values must not overflow.
        img[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        img[0x1f1] = 0xff;
        assert!(matches!(
            payload(&img),
            Err(LoaderError::PayloadBounds { .. })
        ));
        // Zero length.
        let mut img = build_bzimage(b"0123456789", 0x020f, 4);
        img[0x24c..0x250].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            payload(&img),
            Err(LoaderError::PayloadBounds { .. })
        ));
    }

    #[test]
    fn payload_may_end_exactly_at_end_of_file() {
        let mut img = build_bzimage(b"abcd", 0x020f, 1);
        img.truncate(img.len() - 64); // drop the trailing padding
        assert_eq!(payload(&img).unwrap(), Some(&b"abcd"[..]));
    }
}
