//! The xs_wire protocol: message header, message types, error names.
//!
//! Every message, in both directions and on both transports (unix socket and
//! the guest's shared ring), is a 16-byte header of four little-endian `u32`s
//! (`type`, `req_id`, `tx_id`, `len`) followed by `len` payload bytes, with
//! `len <= PAYLOAD_MAX`.

use thiserror::Error;

/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// Largest payload either side may send (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest path relative to a domain's home (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// Message types of `enum xsd_sockmsg_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
    Invalid = 0xffff,
}

impl MsgType {
    /// The type for a raw header value; `None` for numbers Xen never assigned
    /// (including the removed RESTRICT, 20).
    pub fn from_u32(v: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            0xffff => Invalid,
            _ => return None,
        })
    }

    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// The errors xenstore reports, by the names of `xsd_errors` in xs_wire.h.
/// The [`Display`](std::fmt::Display) form is exactly the wire string.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XsError {
    #[error("EINVAL")]
    Inval,
    #[error("EACCES")]
    Acces,
    #[error("EEXIST")]
    Exist,
    #[error("EISDIR")]
    IsDir,
    #[error("ENOENT")]
    NoEnt,
    #[error("ENOMEM")]
    NoMem,
    #[error("ENOSPC")]
    NoSpc,
    #[error("EIO")]
    Io,
    #[error("ENOTEMPTY")]
    NotEmpty,
    #[error("ENOSYS")]
    NoSys,
    #[error("EROFS")]
    RoFs,
    #[error("EBUSY")]
    Busy,
    #[error("EAGAIN")]
    Again,
    #[error("EISCONN")]
    IsConn,
    #[error("E2BIG")]
    TooBig,
    #[error("EPERM")]
    Perm,
}

impl XsError {
    /// Every error, in xs_wire.h table order.
    pub const ALL: [XsError; 16] = [
        XsError::Inval,
        XsError::Acces,
        XsError::Exist,
        XsError::IsDir,
        XsError::NoEnt,
        XsError::NoMem,
        XsError::NoSpc,
        XsError::Io,
        XsError::NotEmpty,
        XsError::NoSys,
        XsError::RoFs,
        XsError::Busy,
        XsError::Again,
        XsError::IsConn,
        XsError::TooBig,
        XsError::Perm,
    ];

    /// The errno name sent on the wire, e.g. `"ENOENT"`.
    pub fn name(self) -> &'static str {
        match self {
            XsError::Inval => "EINVAL",
            XsError::Acces => "EACCES",
            XsError::Exist => "EEXIST",
            XsError::IsDir => "EISDIR",
            XsError::NoEnt => "ENOENT",
            XsError::NoMem => "ENOMEM",
            XsError::NoSpc => "ENOSPC",
            XsError::Io => "EIO",
            XsError::NotEmpty => "ENOTEMPTY",
            XsError::NoSys => "ENOSYS",
            XsError::RoFs => "EROFS",
            XsError::Busy => "EBUSY",
            XsError::Again => "EAGAIN",
            XsError::IsConn => "EISCONN",
            XsError::TooBig => "E2BIG",
            XsError::Perm => "EPERM",
        }
    }

    /// Parse an error name (with or without its trailing NUL).
    pub fn from_name(name: &[u8]) -> Option<XsError> {
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        XsError::ALL
            .iter()
            .copied()
            .find(|e| e.name().as_bytes() == name)
    }
}

/// A message header (`struct xsd_sockmsg`), host (little) endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Raw type; may be a number that [`MsgType::from_u32`] rejects.
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            ty: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.ty.to_le_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u32(self.ty)
    }
}

/// Encode a whole message. The payload must not exceed [`PAYLOAD_MAX`]; the
/// store never builds a longer one (callers check and answer E2BIG).
pub fn encode_message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let hdr = Header {
        ty,
        req_id,
        tx_id,
        len,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&hdr.encode());
    out.extend_from_slice(payload);
    out
}

/// An error reply for a request.
pub fn encode_error(req_id: u32, tx_id: u32, err: XsError) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(err.name().as_bytes());
    p.push(0);
    encode_message(MsgType::Error.as_u32(), req_id, tx_id, &p)
}

/// A watch event (`epath\0token\0`, req_id = tx_id = 0).
pub fn encode_watch_event(path: &str, token: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(path.len() + token.len() + 2);
    p.extend_from_slice(path.as_bytes());
    p.push(0);
    p.extend_from_slice(token.as_bytes());
    p.push(0);
    encode_message(MsgType::WatchEvent.as_u32(), 0, 0, &p)
}

/// Exactly one NUL-terminated string (xenstored's `onearg`).
pub fn one_arg(payload: &[u8]) -> Result<&[u8], XsError> {
    match payload.split_last() {
        Some((0, body)) if !body.contains(&0) => Ok(body),
        _ => Err(XsError::Inval),
    }
}

/// All NUL-terminated strings of a payload; the payload must end in a NUL.
pub fn strings(payload: &[u8]) -> Result<Vec<&[u8]>, XsError> {
    match payload.split_last() {
        Some((0, body)) => Ok(body.split(|&b| b == 0).collect()),
        _ => Err(XsError::Inval),
    }
}

/// A payload string as UTF-8 text (paths, tokens, numbers).
pub fn text(b: &[u8]) -> Result<&str, XsError> {
    std::str::from_utf8(b).map_err(|_| XsError::Inval)
}

/// A decimal number in a payload string, like a domid or an offset.
pub fn number(b: &[u8]) -> Result<u64, XsError> {
    let s = text(b)?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(XsError::Inval);
    }
    s.parse().map_err(|_| XsError::Inval)
}

/// A decoded message: header and payload.
pub type Message = (Header, Vec<u8>);

/// Incremental splitter of a byte stream into messages.
///
/// Memory is bounded: it never holds more than one header plus
/// [`PAYLOAD_MAX`] bytes. A header announcing a longer payload is a protocol
/// violation ([`FrameError::TooLong`]) after which the stream is unusable.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

/// A stream that broke the framing rules.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    #[error("message payload of {0} bytes exceeds XENSTORE_PAYLOAD_MAX")]
    TooLong(u32),
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Bytes still needed to complete the current message (never 0).
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return HEADER_LEN - self.buf.len();
        }
        let len = self.header().map(|h| h.len as usize).unwrap_or(0);
        // Only called with a validated header; clamp regardless.
        (HEADER_LEN + len.min(PAYLOAD_MAX))
            .saturating_sub(self.buf.len())
            .max(1)
    }

    fn header(&self) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = self.buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header::parse(h))
    }

    /// Whether a message has been partly received.
    pub fn is_mid_message(&self) -> bool {
        !self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Feed bytes; returns how many were taken (at most up to the end of the
    /// current message) and the completed message, if any.
    pub fn push(&mut self, data: &[u8]) -> Result<(usize, Option<Message>), FrameError> {
        let mut taken = 0;
        if self.buf.len() < HEADER_LEN {
            let n = (HEADER_LEN - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            taken = n;
            if self.buf.len() < HEADER_LEN {
                return Ok((taken, None));
            }
            if let Some(h) = self.header() {
                if h.len as usize > PAYLOAD_MAX {
                    return Err(FrameError::TooLong(h.len));
                }
            }
        }
        let Some(h) = self.header() else {
            return Ok((taken, None));
        };
        let total = HEADER_LEN + h.len as usize;
        let rest = &data[taken..];
        let n = total.saturating_sub(self.buf.len()).min(rest.len());
        self.buf.extend_from_slice(&rest[..n]);
        taken += n;
        if self.buf.len() == total {
            let payload = self.buf.split_off(HEADER_LEN);
            self.buf.clear();
            return Ok((taken, Some((h, payload))));
        }
        Ok((taken, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header {
            ty: 2,
            req_id: 7,
            tx_id: 9,
            len: 4,
        };
        assert_eq!(Header::parse(&h.encode()), h);
        assert_eq!(h.msg_type(), Some(MsgType::Read));
    }

    #[test]
    fn type_numbers_match_xs_wire() {
        assert_eq!(MsgType::from_u32(20), None);
        assert_eq!(MsgType::from_u32(21), Some(MsgType::ResetWatches));
        assert_eq!(MsgType::from_u32(22), Some(MsgType::DirectoryPart));
        assert_eq!(MsgType::from_u32(23), None);
        assert_eq!(MsgType::from_u32(0xffff), Some(MsgType::Invalid));
        for v in 0..23u32 {
            if let Some(t) = MsgType::from_u32(v) {
                assert_eq!(t.as_u32(), v);
            }
        }
    }

    #[test]
    fn error_names() {
        let names: Vec<&str> = XsError::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "EINVAL",
                "EACCES",
                "EEXIST",
                "EISDIR",
                "ENOENT",
                "ENOMEM",
                "ENOSPC",
                "EIO",
                "ENOTEMPTY",
                "ENOSYS",
                "EROFS",
                "EBUSY",
                "EAGAIN",
                "EISCONN",
                "E2BIG",
                "EPERM"
            ]
        );
        for e in XsError::ALL {
            assert_eq!(e.to_string(), e.name());
            assert_eq!(XsError::from_name(format!("{e}\0").as_bytes()), Some(e));
        }
        assert_eq!(XsError::from_name(b"EDQUOT"), None);
        let m = encode_error(5, 6, XsError::NoEnt);
        assert_eq!(&m[16..], b"ENOENT\0");
        assert_eq!(Header::parse(m[..16].try_into().unwrap()).ty, 16);
    }

    #[test]
    fn argument_parsing() {
        assert_eq!(one_arg(b"/a\0"), Ok(&b"/a"[..]));
        assert_eq!(one_arg(b"/a"), Err(XsError::Inval));
        assert_eq!(one_arg(b"/a\0b\0"), Err(XsError::Inval));
        assert_eq!(one_arg(b""), Err(XsError::Inval));
        assert_eq!(strings(b"a\0b\0").unwrap(), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(strings(b"\0").unwrap(), vec![&b""[..]]);
        assert!(strings(b"a").is_err());
        assert_eq!(number(b"42"), Ok(42));
        assert!(number(b"-1").is_err());
        assert!(number(b"").is_err());
        assert!(number(b"99999999999999999999999").is_err());
    }

    #[test]
    fn decoder_splits_and_bounds() {
        let mut d = FrameDecoder::new();
        let m1 = encode_message(2, 1, 0, b"/x\0");
        let m2 = encode_message(1, 2, 0, b"/\0");
        let mut stream = m1.clone();
        stream.extend_from_slice(&m2);
        // Byte by byte.
        let mut got = Vec::new();
        for b in &stream {
            let (n, msg) = d.push(std::slice::from_ref(b)).unwrap();
            assert_eq!(n, 1);
            if let Some(m) = msg {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"/x\0");
        // One push stops at the message boundary.
        let (n, msg) = d.push(&stream).unwrap();
        assert_eq!(n, m1.len());
        assert!(msg.is_some());
        assert_eq!(d.wanted(), HEADER_LEN);
        // Oversized.
        let h = Header {
            ty: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        assert_eq!(d.push(&h.encode()), Err(FrameError::TooLong(4097)));
        // Exactly PAYLOAD_MAX is fine.
        let mut d = FrameDecoder::new();
        let big = encode_message(11, 0, 0, &vec![b'a'; PAYLOAD_MAX]);
        let (n, msg) = d.push(&big).unwrap();
        assert_eq!(n, big.len());
        assert_eq!(msg.unwrap().1.len(), PAYLOAD_MAX);
    }
}
