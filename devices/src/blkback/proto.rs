//! blkif ring entries (xen/include/public/io/blkif.h, x86-64 layout).

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
pub const OP_WRITE_BARRIER: u8 = 2;
pub const OP_FLUSH_DISKCACHE: u8 = 3;
pub const OP_DISCARD: u8 = 5;
pub const OP_INDIRECT: u8 = 6;

pub const RSP_OKAY: i16 = 0;
pub const RSP_ERROR: i16 = -1;
pub const RSP_EOPNOTSUPP: i16 = -2;

/// A ring entry: the union of request (112 bytes) and response (16).
pub const ENTRY: usize = 112;
pub const MAX_SEGMENTS: usize = 11;
/// Segments per request the backend accepts through indirect pages
/// (`feature-max-indirect-segments`).
pub const MAX_INDIRECT_SEGMENTS: u16 = 256;
pub const MAX_INDIRECT_PAGES: usize = 8;
/// `struct blkif_request_segment` entries in one indirect page.
pub const SEGS_PER_INDIRECT_PAGE: usize = 4096 / 8;
pub const SECTOR: u64 = 512;

/// One page of a request's data: sectors `first..=last` of granted page `gref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub gref: u32,
    pub first: u8,
    pub last: u8,
}

impl Segment {
    pub fn parse(b: &[u8]) -> Segment {
        Segment {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            first: b[4],
            last: b[5],
        }
    }

    /// Sectors covered, or None when the range is not inside one page.
    pub fn sectors(&self) -> Option<u64> {
        (self.first <= self.last && self.last < 8).then(|| u64::from(self.last - self.first) + 1)
    }
}

/// Where a read/write request's segments are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segments {
    Direct(Vec<Segment>),
    /// `count` segments in the granted pages `pages`.
    Indirect {
        count: u16,
        pages: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Rw {
        write: bool,
        sector: u64,
        segs: Segments,
    },
    Flush,
    Barrier {
        sector: u64,
        segs: Vec<Segment>,
    },
    Discard {
        sector: u64,
        nr_sectors: u64,
    },
    /// Malformed or unsupported: answered with `status`.
    Bad {
        status: i16,
        why: &'static str,
    },
}

/// A parsed ring entry: the id and operation echoed in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub id: u64,
    pub op: u8,
    pub req: Request,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn direct_segments(b: &[u8], n: usize) -> Vec<Segment> {
    (0..n)
        .map(|i| Segment::parse(&b[24 + i * 8..32 + i * 8]))
        .collect()
}

/// Parse one ring entry; never fails (bad entries become [`Request::Bad`]).
pub fn parse(b: &[u8; ENTRY], max_indirect: u16) -> Parsed {
    let op = b[0];
    let id = u64_at(b, 8);
    let bad = |op, status, why| Parsed {
        id,
        op,
        req: Request::Bad { status, why },
    };
    match op {
        OP_READ | OP_WRITE => {
            let n = usize::from(b[1]);
            if n == 0 || n > MAX_SEGMENTS {
                return bad(op, RSP_ERROR, "bad segment count");
            }
            Parsed {
                id,
                op,
                req: Request::Rw {
                    write: op == OP_WRITE,
                    sector: u64_at(b, 16),
                    segs: Segments::Direct(direct_segments(b, n)),
                },
            }
        }
        OP_WRITE_BARRIER => {
            let n = usize::from(b[1]);
            if n > MAX_SEGMENTS {
                return bad(op, RSP_ERROR, "bad segment count");
            }
            Parsed {
                id,
                op,
                req: Request::Barrier {
                    sector: u64_at(b, 16),
                    segs: direct_segments(b, n),
                },
            }
        }
        OP_FLUSH_DISKCACHE => Parsed {
            id,
            op,
            req: Request::Flush,
        },
        OP_DISCARD => Parsed {
            id,
            op,
            req: Request::Discard {
                sector: u64_at(b, 16),
                nr_sectors: u64_at(b, 24),
            },
        },
        OP_INDIRECT => {
            let inner = b[1];
            if inner != OP_READ && inner != OP_WRITE {
                return bad(inner, RSP_ERROR, "bad indirect operation");
            }
            let count = u16_at(b, 2);
            if count == 0 || count > max_indirect {
                return bad(inner, RSP_ERROR, "bad indirect segment count");
            }
            let npages = usize::from(count).div_ceil(SEGS_PER_INDIRECT_PAGE);
            if npages > MAX_INDIRECT_PAGES {
                return bad(inner, RSP_ERROR, "too many indirect pages");
            }
            let pages = (0..npages).map(|i| u32_at(b, 28 + i * 4)).collect();
            Parsed {
                id,
                op: inner,
                req: Request::Rw {
                    write: inner == OP_WRITE,
                    sector: u64_at(b, 16),
                    segs: Segments::Indirect { count, pages },
                },
            }
        }
        _ => bad(op, RSP_EOPNOTSUPP, "unknown operation"),
    }
}

/// A `struct blkif_response`.
pub fn response(id: u64, op: u8, status: i16) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&id.to_le_bytes());
    r[8] = op;
    r[10..12].copy_from_slice(&status.to_le_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: u8, nseg: u8, id: u64, sector: u64) -> [u8; ENTRY] {
        let mut b = [0u8; ENTRY];
        b[0] = op;
        b[1] = nseg;
        b[8..16].copy_from_slice(&id.to_le_bytes());
        b[16..24].copy_from_slice(&sector.to_le_bytes());
        b
    }

    #[test]
    fn read_with_segments() {
        let mut b = entry(OP_READ, 2, 77, 100);
        b[24..28].copy_from_slice(&9u32.to_le_bytes());
        b[28] = 0;
        b[29] = 7;
        b[32..36].copy_from_slice(&10u32.to_le_bytes());
        b[36] = 1;
        b[37] = 3;
        let p = parse(&b, 256);
        assert_eq!(p.id, 77);
        let Request::Rw {
            write,
            sector,
            segs,
        } = p.req
        else {
            panic!("{p:?}")
        };
        assert!(!write);
        assert_eq!(sector, 100);
        let Segments::Direct(s) = segs else { panic!() };
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].sectors(), Some(8));
        assert_eq!(s[1].sectors(), Some(3));
    }

    #[test]
    fn hostile_entries() {
        for (b, want) in [
            (entry(OP_READ, 0, 1, 0), RSP_ERROR),
            (entry(OP_WRITE, 12, 1, 0), RSP_ERROR),
            (entry(OP_WRITE, 255, 1, 0), RSP_ERROR),
            (entry(OP_WRITE_BARRIER, 200, 1, 0), RSP_ERROR),
            (entry(99, 1, 1, 0), RSP_EOPNOTSUPP),
            (entry(OP_INDIRECT, OP_FLUSH_DISKCACHE, 1, 0), RSP_ERROR),
        ] {
            let p = parse(&b, 256);
            assert!(
                matches!(p.req, Request::Bad { status, .. } if status == want),
                "{p:?}"
            );
        }
        // Indirect with too many segments for what we advertised.
        let mut b = entry(OP_INDIRECT, OP_READ, 1, 0);
        b[2..4].copy_from_slice(&257u16.to_le_bytes());
        assert!(matches!(parse(&b, 256).req, Request::Bad { .. }));
        b[2..4].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(parse(&b, u16::MAX).req, Request::Bad { .. }));
        // Segment ranges outside a page.
        assert_eq!(
            Segment {
                gref: 0,
                first: 3,
                last: 2
            }
            .sectors(),
            None
        );
        assert_eq!(
            Segment {
                gref: 0,
                first: 0,
                last: 8
            }
            .sectors(),
            None
        );
    }

    #[test]
    fn indirect_and_response_layout() {
        let mut b = entry(OP_INDIRECT, OP_WRITE, 5, 8);
        b[2..4].copy_from_slice(&513u16.to_le_bytes());
        b[28..32].copy_from_slice(&40u32.to_le_bytes());
        b[32..36].copy_from_slice(&41u32.to_le_bytes());
        let p = parse(&b, 1024);
        assert_eq!(p.op, OP_WRITE);
        assert_eq!(
            p.req,
            Request::Rw {
                write: true,
                sector: 8,
                segs: Segments::Indirect {
                    count: 513,
                    pages: vec![40, 41]
                }
            }
        );
        let r = response(0x1122, OP_WRITE, RSP_ERROR);
        assert_eq!(&r[..8], &0x1122u64.to_le_bytes());
        assert_eq!(r[8], 1);
        assert_eq!(&r[10..12], &(-1i16).to_le_bytes());
    }
}
