//! blkif requests against the translator, without a backend: the chains it
//! writes must point at the granted frames themselves (no copy), carry the
//! right header, and refuse what blkback refuses.

use std::sync::{Arc, Mutex};

use xen_shim::domain::Domain;
use xen_shim::testing::{grant, test_domain};

use super::*;

/// Frames 40.. are granted as gref 10.. (writable); frame 60 as gref 30, read-only.
fn rig(max_discard: Option<u32>) -> (Arc<Domain>, Translator) {
    let (dom, _) = test_domain(128);
    for i in 0..20 {
        grant(&dom, 10 + i, 0, 40 + i, false);
    }
    grant(&dom, 30, 0, 60, true);
    let ctx = BackendCtx {
        dom: dom.clone(),
        store: Arc::new(Mutex::new(xen_shim::xenstore::Store::new())),
        backends: Default::default(),
        shared_ram: None,
    };
    // Queue 1 of two: offsets are the queue's own.
    let (l, len) = layout(1);
    let shadow = Arc::new(Shadow::new(len).unwrap());
    let vring = DriverRing::new(&shadow, l);
    let t = Translator {
        ctx,
        shadow,
        vring,
        info: BlkInfo {
            capacity: 2048,
            read_only: false,
            flush: true,
            max_discard_sectors: max_discard,
            seg_max: Some(126),
            num_queues: 1,
        },
        read_only: false,
        name: "test".into(),
    };
    (dom, t)
}

fn rw(op: u8, sector: u64, segs: &[(u32, u8, u8)]) -> Parsed {
    Parsed {
        id: 9,
        op,
        req: Request::Rw {
            write: op == proto::OP_WRITE,
            sector,
            segs: Segments::Direct(
                segs.iter()
                    .map(|&(gref, first, last)| Segment { gref, first, last })
                    .collect(),
            ),
        },
    }
}

/// The indirect table of slot `s`: (addr, len, flags, next) per descriptor.
fn table(t: &Translator, s: u16) -> Vec<(u64, u32, u16, u16)> {
    let mut d = [0u8; 16];
    t.shadow
        .read(t.vring.layout.desc + 16 * usize::from(s), &mut d);
    let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
    let len = u32::from_le_bytes(d[8..12].try_into().unwrap());
    assert_eq!(
        u16::from_le_bytes([d[12], d[13]]),
        VRING_DESC_F_INDIRECT as u16
    );
    let off = (addr - SHADOW_GPA) as usize;
    assert_eq!(off, slot_off(&t.vring.layout, s));
    let mut raw = vec![0u8; len as usize];
    t.shadow.read(off, &mut raw);
    raw.chunks(16)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().unwrap()),
                u32::from_le_bytes(c[8..12].try_into().unwrap()),
                u16::from_le_bytes([c[12], c[13]]),
                u16::from_le_bytes([c[14], c[15]]),
            )
        })
        .collect()
}

fn header(t: &Translator, s: u16) -> (u32, u64) {
    let mut h = [0u8; 16];
    t.shadow.read(slot_off(&t.vring.layout, s) + HDR, &mut h);
    (
        u32::from_le_bytes(h[..4].try_into().unwrap()),
        u64::from_le_bytes(h[8..].try_into().unwrap()),
    )
}

const N: u16 = VRING_DESC_F_NEXT as u16;
const W: u16 = VRING_DESC_F_WRITE as u16;

#[test]
fn a_write_points_at_the_granted_frames_and_merges_adjacent_ones() {
    let (_dom, mut t) = rig(None);
    // Page 40 whole, page 41 whole (adjacent: one descriptor), sectors 2..=3 of page 43.
    let slot = t
        .submit(
            5,
            &rw(proto::OP_WRITE, 16, &[(10, 0, 7), (11, 0, 7), (13, 2, 3)]),
        )
        .unwrap();
    assert_eq!(
        (slot.id, slot.op, slot._maps.len()),
        (9, proto::OP_WRITE, 3)
    );
    assert_eq!(header(&t, 5), (VIRTIO_BLK_T_OUT, 16));
    let tb = table(&t, 5);
    let status = SHADOW_GPA + (slot_off(&t.vring.layout, 5) + STATUS) as u64;
    assert_eq!(tb.len(), 4);
    assert_eq!(tb[0].1, 16);
    assert_eq!(tb[1], (40 << 12, 8192, N, 2));
    assert_eq!(tb[2], ((43 << 12) + 1024, 1024, N, 3));
    assert_eq!(tb[3], (status, 1, W, 0));
    // A read's data descriptors are device-writable.
    let _r = t.submit(6, &rw(proto::OP_READ, 0, &[(12, 0, 0)])).unwrap();
    assert_eq!(header(&t, 6), (VIRTIO_BLK_T_IN, 0));
    assert_eq!(table(&t, 6)[1], (42 << 12, 512, W | N, 2));
}

#[test]
fn refusals_are_blkbacks() {
    let (_dom, mut t) = rig(None);
    let err = |t: &mut Translator, p: &Parsed| t.submit(0, p).err();
    // Beyond the end of the 2048-sector disk.
    assert_eq!(
        err(&mut t, &rw(proto::OP_READ, 2047, &[(10, 0, 1)])),
        Some(proto::RSP_ERROR)
    );
    // A read into a page granted read-only.
    assert_eq!(
        err(&mut t, &rw(proto::OP_READ, 0, &[(30, 0, 7)])),
        Some(proto::RSP_ERROR)
    );
    // An unknown grant and a segment outside its page.
    assert_eq!(
        err(&mut t, &rw(proto::OP_WRITE, 0, &[(99, 0, 7)])),
        Some(proto::RSP_ERROR)
    );
    assert_eq!(
        err(&mut t, &rw(proto::OP_WRITE, 0, &[(10, 3, 8)])),
        Some(proto::RSP_ERROR)
    );
    // No discard offered; barriers never.
    let discard = Parsed {
        id: 1,
        op: proto::OP_DISCARD,
        req: Request::Discard {
            sector: 0,
            nr_sectors: 8,
        },
    };
    assert_eq!(err(&mut t, &discard), Some(proto::RSP_EOPNOTSUPP));
    let barrier = Parsed {
        id: 1,
        op: proto::OP_WRITE_BARRIER,
        req: Request::Barrier {
            sector: 0,
            segs: Vec::new(),
        },
    };
    assert_eq!(err(&mut t, &barrier), Some(proto::RSP_EOPNOTSUPP));
    // Read-only disk: writes refused.
    t.read_only = true;
    assert_eq!(
        err(&mut t, &rw(proto::OP_WRITE, 0, &[(10, 0, 7)])),
        Some(proto::RSP_ERROR)
    );
}

#[test]
fn a_large_discard_is_split_into_the_backends_maximum() {
    let (_dom, mut t) = rig(Some(100));
    let p = Parsed {
        id: 3,
        op: proto::OP_DISCARD,
        req: Request::Discard {
            sector: 10,
            nr_sectors: 250,
        },
    };
    let slot = t.submit(2, &p).unwrap();
    assert_eq!(slot.discard_rest, Some((110, 150)));
    assert_eq!(header(&t, 2).0, VIRTIO_BLK_T_DISCARD);
    let mut d = [0u8; 16];
    t.shadow
        .read(slot_off(&t.vring.layout, 2) + DISCARD, &mut d);
    assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), 10);
    assert_eq!(u32::from_le_bytes(d[8..12].try_into().unwrap()), 100);
    assert_eq!(t.discard_piece(2, 110, 150), Some((210, 50)));
    assert_eq!(t.discard_piece(2, 210, 50), None);
    // The status byte maps to blkif's codes.
    for (v, want) in [
        (VIRTIO_BLK_S_OK, proto::RSP_OKAY),
        (VIRTIO_BLK_S_IOERR, proto::RSP_ERROR),
        (VIRTIO_BLK_S_UNSUPP, proto::RSP_EOPNOTSUPP),
        (0xff, proto::RSP_ERROR),
    ] {
        t.shadow
            .write(slot_off(&t.vring.layout, 2) + STATUS, &[v as u8]);
        assert_eq!(t.status(2), want);
    }
}
