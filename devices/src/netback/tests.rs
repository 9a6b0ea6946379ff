//! The data paths against a fake frontend on a test domain (no KVM, no
//! tap), hostile frontends included, and the xenbus handshake end to end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use xen_shim::domain::Domain;
use xen_shim::testing::{grant, test_domain};
use xen_shim::xenstore::Store;

use super::csum::tests::{ipv4_frame, l4_ok};
use super::csum::{IPPROTO_TCP, IPPROTO_UDP};
use super::proto::*;
use super::rx::{Deliver, RxFeatures, RxPath};
use super::tap::Link;
use super::tx::TxPath;
use super::*;
use crate::ring::{BackRing, GrantedPages};

const TX_RING: u32 = 10;
const RX_RING: u32 = 11;

/// The frontend's view of both rings (frames 10 and 11, grants 1 and 2).
struct Front {
    dom: Arc<Domain>,
    tx_prod: u32,
    rx_prod: u32,
}

impl Front {
    fn new(dom: &Arc<Domain>) -> Front {
        grant(dom, 1, 0, TX_RING, false);
        grant(dom, 2, 0, RX_RING, false);
        Front {
            dom: dom.clone(),
            tx_prod: 0,
            rx_prod: 0,
        }
    }
    fn page(frame: u32) -> u64 {
        u64::from(frame) << 12
    }
    fn tx_path(&self) -> TxPath {
        let ring = BackRing::new(GrantedPages::map(&self.dom, &[1]).unwrap(), TX_ENTRY);
        TxPath::new(ring, self.dom.clone())
    }
    fn rx_path(&self, f: RxFeatures) -> RxPath {
        let ring = BackRing::new(GrantedPages::map(&self.dom, &[2]).unwrap(), RX_ENTRY);
        RxPath::new(ring, self.dom.clone(), f)
    }
    fn tx_push(&mut self, slots: &[[u8; TX_ENTRY]]) {
        let base = Self::page(TX_RING);
        for s in slots {
            let at = base + 64 + u64::from(self.tx_prod % 256) * 12;
            self.dom.mem.write(at, s).unwrap();
            self.tx_prod += 1;
        }
        self.dom.mem.write_u32(base, self.tx_prod).unwrap();
    }
    fn tx_rsp(&self, idx: u32) -> (u16, i16) {
        let at = Self::page(TX_RING) + 64 + u64::from(idx % 256) * 12;
        let v = self.dom.mem.read_u32(at).unwrap();
        (v as u16, (v >> 16) as i16)
    }
    fn tx_rsp_prod(&self) -> u32 {
        self.dom.mem.read_u32(Self::page(TX_RING) + 8).unwrap()
    }
    /// Post rx buffer `id` in frame 30 + id, granted as 40 + id.
    fn rx_post(&mut self, ids: std::ops::Range<u16>) {
        let base = Self::page(RX_RING);
        for id in ids {
            grant(&self.dom, 40 + u32::from(id), 0, 30 + u32::from(id), false);
            let mut e = [0u8; 8];
            e[0..2].copy_from_slice(&id.to_le_bytes());
            e[4..8].copy_from_slice(&(40 + u32::from(id)).to_le_bytes());
            let at = base + 64 + u64::from(self.rx_prod % 256) * 8;
            self.dom.mem.write(at, &e).unwrap();
            self.rx_prod += 1;
        }
        self.dom.mem.write_u32(base, self.rx_prod).unwrap();
    }
    /// (id, offset, flags, status) of rx response `idx`.
    fn rx_rsp(&self, idx: u32) -> (u16, u16, u16, i16) {
        let mut b = [0u8; 8];
        let at = Self::page(RX_RING) + 64 + u64::from(idx % 256) * 8;
        self.dom.mem.read(at, &mut b).unwrap();
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        (u(0), u(2), u(4), u(6) as i16)
    }
    fn rx_rsp_prod(&self) -> u32 {
        self.dom.mem.read_u32(Self::page(RX_RING) + 8).unwrap()
    }
    fn rx_data(&self, id: u16, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.dom
            .mem
            .read(Self::page(30 + u32::from(id)), &mut v)
            .unwrap();
        v
    }
}

/// Put `data` in tx buffer frame 20 + n (grant 10 + n) at `off`.
fn tx_buf(dom: &Domain, n: u32, off: usize, data: &[u8]) -> u32 {
    grant(dom, 10 + n, 0, 20 + n, true);
    dom.mem
        .write(u64::from(20 + n) << 12 | off as u64, data)
        .unwrap();
    10 + n
}

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> [u8; TX_ENTRY] {
    TxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
    .encode()
}

fn extra(e: ExtraInfo) -> [u8; TX_ENTRY] {
    let mut b = [0u8; TX_ENTRY];
    b[..8].copy_from_slice(&e.encode());
    b
}

fn run_tx(tx: &mut TxPath) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    tx.poll(&mut |f: &[u8]| out.push(f.to_vec()));
    out
}

#[test]
fn tx_one_slot_packet() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut tx = fe.tx_path();
    let f = ipv4_frame(IPPROTO_UDP, b"ping");
    let g = tx_buf(&dom, 0, 100, &f);
    fe.tx_push(&[req(g, 100, 0, 7, f.len() as u16)]);
    let out = run_tx(&mut tx);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
    assert_eq!(&out[0][VNET_HDR_LEN..], &f[..]);
    assert_eq!(fe.tx_rsp_prod(), 1);
    assert_eq!(fe.tx_rsp(0), (7, RSP_OKAY));
    assert!(dom.grants.lock().unwrap().len() <= 2, "buffers unmapped");
}

#[test]
fn tx_multi_slot_gso_packet() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut tx = fe.tx_path();
    let payload: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    let mut f = ipv4_frame(IPPROTO_TCP, &payload);
    let l4 = csum::find_l4(&f).unwrap();
    csum::set_partial(&mut f, &l4);
    // 100 bytes, then 4000, then the rest, each in its own page.
    let (a, rest) = f.split_at(100);
    let (b, c) = rest.split_at(4000);
    let ga = tx_buf(&dom, 0, 50, a);
    let gb = tx_buf(&dom, 1, 0, b);
    let gc = tx_buf(&dom, 2, 10, c);
    let flags = NETTXF_CSUM_BLANK | NETTXF_MORE_DATA | NETTXF_EXTRA_INFO;
    fe.tx_push(&[
        req(ga, 50, flags, 1, f.len() as u16),
        extra(ExtraInfo::gso(1448, GSO_TYPE_TCPV4)),
        req(gb, 0, NETTXF_MORE_DATA, 2, 4000),
        req(gc, 10, 0, 3, c.len() as u16),
    ]);
    let out = run_tx(&mut tx);
    assert_eq!(out.len(), 1);
    let h = VnetHdr::parse(&out[0]).unwrap();
    assert_eq!(h.flags, VNET_F_NEEDS_CSUM);
    assert_eq!((h.gso_type, h.gso_size), (VNET_GSO_TCPV4, 1448));
    assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (34, 16, 54));
    assert_eq!(&out[0][VNET_HDR_LEN..], &f[..]);
    let rsps: Vec<_> = (0..4).map(|i| fe.tx_rsp(i)).collect();
    assert_eq!(
        rsps,
        [(1, RSP_OKAY), (0, RSP_NULL), (2, RSP_OKAY), (3, RSP_OKAY)]
    );
}

#[test]
fn tx_hostile_requests_get_errors() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut tx = fe.tx_path();
    let f = ipv4_frame(IPPROTO_UDP, b"data");
    let g = tx_buf(&dom, 0, 0, &f);
    let n = f.len() as u16;
    // Bad grant references: outside the table, and not granted.
    fe.tx_push(&[req(u32::MAX, 0, 0, 1, n), req(9, 0, 0, 2, n)]);
    // Offset + size past the page; a fragment larger than the packet.
    fe.tx_push(&[req(g, 4090, 0, 3, n)]);
    fe.tx_push(&[req(g, 0, NETTXF_MORE_DATA, 4, n), req(g, 0, 0, 5, n + 1)]);
    // Shorter than an Ethernet header.
    fe.tx_push(&[req(g, 0, 0, 6, 10)]);
    // Bad extra type.
    fe.tx_push(&[
        req(g, 0, NETTXF_EXTRA_INFO, 7, n),
        extra(ExtraInfo::default()),
    ]);
    // GSO of a UDP packet.
    fe.tx_push(&[
        req(g, 0, NETTXF_EXTRA_INFO, 8, n),
        extra(ExtraInfo::gso(1000, GSO_TYPE_TCPV4)),
    ]);
    // 20 data slots chained (more than XEN_NETIF_NR_SLOTS_MIN).
    let chain: Vec<_> = (0..20)
        .map(|i| req(g, 0, if i < 19 { NETTXF_MORE_DATA } else { 0 }, 100 + i, 1))
        .collect();
    fe.tx_push(&chain);
    // And a good packet afterwards still goes through.
    fe.tx_push(&[req(g, 0, 0, 9, n)]);
    let out = run_tx(&mut tx);
    assert_eq!(out.len(), 1, "only the last packet is sent");
    assert_eq!(fe.tx_rsp_prod(), fe.tx_prod, "every slot answered");
    let mut st = std::collections::HashMap::new();
    for i in 0..fe.tx_prod {
        let (id, s) = fe.tx_rsp(i);
        if s != RSP_NULL {
            st.insert(id, s);
        }
    }
    for id in [1, 2, 3, 4, 5, 6, 7, 8] {
        assert_eq!(st[&id], RSP_ERROR, "id {id}");
    }
    for id in 100..120 {
        assert_eq!(st[&id], RSP_ERROR, "chain id {id}");
    }
    assert_eq!(st[&9], RSP_OKAY);
    assert_eq!(tx.stats.errors, 8, "packets dropped");
    assert!(tx.ring().broken().is_none());
}

#[test]
fn garbage_ring_indices_stop_both_rings() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut tx = fe.tx_path();
    let mut rx = fe.rx_path(RxFeatures::default());
    dom.mem
        .write_u32(Front::page(TX_RING), 0xdead_beef)
        .unwrap();
    dom.mem
        .write_u32(Front::page(RX_RING), 0x8000_0000)
        .unwrap();
    assert!(run_tx(&mut tx).is_empty());
    assert!(tx.ring().broken().is_some());
    assert!(!tx.more());
    let mut pkt = vec![0u8; VNET_HDR_LEN];
    pkt.extend(ipv4_frame(IPPROTO_UDP, b"x"));
    assert_eq!(rx.deliver(&pkt), Deliver::NoRoom);
    assert!(rx.ring().broken().is_some());
    assert!(!rx.more());
    fe.tx_prod = 0;
    let _ = fe;
}

fn vnet(h: VnetHdr, frame: &[u8]) -> Vec<u8> {
    let mut v = h.encode().to_vec();
    v.extend_from_slice(frame);
    v
}

#[test]
fn rx_small_frame() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut rx = fe.rx_path(RxFeatures::default());
    let f = ipv4_frame(IPPROTO_UDP, b"pong");
    assert_eq!(rx.deliver(&vnet(VnetHdr::default(), &f)), Deliver::NoRoom);
    fe.rx_post(0..4);
    assert_eq!(rx.deliver(&vnet(VnetHdr::default(), &f)), Deliver::Done);
    assert!(rx.push() || fe.rx_rsp_prod() == 1);
    assert_eq!(fe.rx_rsp_prod(), 1);
    assert_eq!(fe.rx_rsp(0), (0, 0, 0, f.len() as i16));
    assert_eq!(fe.rx_data(0, f.len()), f);
    assert!(dom.grants.lock().unwrap().len() <= 2, "buffers unmapped");
}

#[test]
fn rx_gso_frame_spans_slots_with_an_extra() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let feats = RxFeatures {
        csum: true,
        ipv6_csum: true,
        gso_tcpv4: true,
        gso_tcpv6: true,
    };
    let mut rx = fe.rx_path(feats);
    fe.rx_post(0..8);
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
    let f = ipv4_frame(IPPROTO_TCP, &payload);
    let h = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: VNET_GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    assert_eq!(rx.deliver(&vnet(h, &f)), Deliver::Done);
    rx.push();
    assert_eq!(fe.rx_rsp_prod(), 4);
    let (id, off, flags, st) = fe.rx_rsp(0);
    assert_eq!((id, off, st), (0, 0, 4096));
    assert_eq!(
        flags,
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_MORE_DATA | NETRXF_EXTRA_INFO
    );
    let mut e = [0u8; 8];
    dom.mem.read(Front::page(RX_RING) + 64 + 8, &mut e).unwrap();
    let e = ExtraInfo::parse(&e);
    assert_eq!((e.ty, e.flags, e.gso_size(), e.gso_type()), (1, 0, 1448, 1));
    assert_eq!(fe.rx_rsp(2), (2, 0, NETRXF_MORE_DATA, 4096));
    let last = (f.len() - 8192) as i16;
    assert_eq!(fe.rx_rsp(3), (3, 0, 0, last));
    let mut got = fe.rx_data(0, 4096);
    got.extend(fe.rx_data(2, 4096));
    got.extend(fe.rx_data(3, last as usize));
    assert_eq!(got, f);
}

#[test]
fn rx_checksum_finished_for_frontends_without_offload() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut rx = fe.rx_path(RxFeatures::default());
    fe.rx_post(0..2);
    let mut f = ipv4_frame(IPPROTO_UDP, b"needs a checksum");
    let l4 = csum::find_l4(&f).unwrap();
    csum::set_partial(&mut f, &l4);
    let h = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    assert_eq!(rx.deliver(&vnet(h, &f)), Deliver::Done);
    rx.push();
    assert_eq!(fe.rx_rsp(0).2, NETRXF_DATA_VALIDATED);
    assert!(l4_ok(&fe.rx_data(0, f.len())));
}

#[test]
fn rx_hostile_buffers_and_bad_frames() {
    let (dom, _) = test_domain(64);
    let mut fe = Front::new(&dom);
    let mut rx = fe.rx_path(RxFeatures::default());
    // A buffer whose grant is read-only, then one that is not granted.
    fe.rx_post(0..1);
    grant(&dom, 40, 0, 30, true);
    let f = ipv4_frame(IPPROTO_UDP, b"x");
    assert_eq!(rx.deliver(&vnet(VnetHdr::default(), &f)), Deliver::Dropped);
    let base = Front::page(RX_RING);
    let mut e = [0u8; 8];
    e[0] = 1;
    e[4..8].copy_from_slice(&999u32.to_le_bytes());
    dom.mem.write(base + 64 + 8, &e).unwrap();
    dom.mem.write_u32(base, 2).unwrap();
    fe.rx_prod = 2;
    assert_eq!(rx.deliver(&vnet(VnetHdr::default(), &f)), Deliver::Dropped);
    rx.push();
    assert_eq!(fe.rx_rsp(0), (0, 0, 0, RSP_ERROR));
    assert_eq!(fe.rx_rsp(1), (1, 0, 0, RSP_ERROR));
    // Malformed frames use no slots.
    fe.rx_post(2..4);
    assert_eq!(rx.deliver(&[0u8; 4]), Deliver::Dropped);
    assert_eq!(
        rx.deliver(&vnet(VnetHdr::default(), &[0; 5])),
        Deliver::Dropped
    );
    let huge = vec![0u8; 18 * PAGE];
    assert_eq!(
        rx.deliver(&vnet(VnetHdr::default(), &huge)),
        Deliver::Dropped
    );
    let gso = VnetHdr {
        gso_type: VNET_GSO_TCPV4,
        ..VnetHdr::default()
    };
    assert_eq!(
        rx.deliver(&vnet(gso, &f)),
        Deliver::Dropped,
        "no GSO feature"
    );
    assert_eq!(rx.deliver(&vnet(VnetHdr::default(), &f)), Deliver::Done);
    rx.push();
    assert_eq!(fe.rx_rsp(2).3, f.len() as i16);
}

/// An in-memory link: frames sent by the backend, frames to deliver.
#[derive(Default)]
struct FakeLink {
    sent: Mutex<Vec<Vec<u8>>>,
    inbox: Mutex<VecDeque<Vec<u8>>>,
    cv: Condvar,
    offload: AtomicU32,
}

impl Link for FakeLink {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.sent.lock().unwrap().push(frame.to_vec());
        Ok(())
    }
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        let mut q = self.inbox.lock().unwrap();
        if q.is_empty() && !timeout.is_zero() {
            q = self.cv.wait_timeout(q, timeout).unwrap().0;
        }
        Ok(q.pop_front().map(|f| {
            buf[..f.len()].copy_from_slice(&f);
            f.len()
        }))
    }
    fn set_offload(&self, flags: u32) -> std::io::Result<()> {
        self.offload.store(flags, Ordering::Relaxed);
        Ok(())
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn handshake_data_and_reconnect() {
    let (dom, _) = test_domain(64);
    let store = Arc::new(Mutex::new(Store::new()));
    let ctx = BackendCtx {
        dom: dom.clone(),
        store: store.clone(),
        backends: Arc::new(crate::notify::Backends::default()),
        shared_ram: None,
    };
    let link = Arc::new(FakeLink::default());
    let cfg = VifConfig {
        devid: 0,
        domain_name: "guest".into(),
        ..VifConfig::default()
    };
    let mac = mac::generate("guest", 0);
    let h = spawn_with_link(&ctx, 1, &cfg, mac, "vif1.0".into(), link.clone()).unwrap();
    let fe = "/local/domain/1/device/vif/0";
    let be = "/local/domain/0/backend/vif/1/0";
    let read = |p: &str| store.lock().unwrap().read_string(p).unwrap_or_default();
    let write = |p: &str, v: &str| store.lock().unwrap().write(p, v).unwrap();
    assert_eq!(read(&format!("{fe}/mac")), mac::format(&mac));
    assert_eq!(read(&format!("{be}/feature-rx-copy")), "1");
    assert_eq!(read(&format!("{be}/state")), "2");

    // netfront: rings, split event channels, features, then Connected.
    let mut front = Front::new(&dom);
    let (ptx, prx) = {
        let mut ev = dom.evtchn.lock().unwrap();
        (ev.alloc_unbound(0).unwrap(), ev.alloc_unbound(0).unwrap())
    };
    for (k, v) in [
        ("tx-ring-ref", "1".to_string()),
        ("rx-ring-ref", "2".into()),
        ("event-channel-tx", ptx.to_string()),
        ("event-channel-rx", prx.to_string()),
        ("request-rx-copy", "1".into()),
        ("feature-rx-notify", "1".into()),
        ("feature-sg", "1".into()),
        ("feature-gso-tcpv4", "1".into()),
        ("state", "4".into()),
    ] {
        write(&format!("{fe}/{k}"), &v);
    }
    wait_until("backend connected", || read(&format!("{be}/state")) == "4");
    assert_eq!(
        link.offload.load(Ordering::Relaxed),
        tap::TUN_F_CSUM | tap::TUN_F_TSO4
    );

    // Guest -> host.
    let f = ipv4_frame(IPPROTO_UDP, b"to the host");
    let g = tx_buf(&dom, 0, 0, &f);
    front.tx_push(&[req(g, 0, 0, 5, f.len() as u16)]);
    wait_until("tx frame", || !link.sent.lock().unwrap().is_empty());
    assert_eq!(&link.sent.lock().unwrap()[0][VNET_HDR_LEN..], &f[..]);
    wait_until("tx response", || front.tx_rsp_prod() == 1);

    // Host -> guest.
    front.rx_post(0..4);
    let r = ipv4_frame(IPPROTO_UDP, b"to the guest");
    link.inbox
        .lock()
        .unwrap()
        .push_back(vnet(VnetHdr::default(), &r));
    link.cv.notify_all();
    wait_until("rx response", || front.rx_rsp_prod() == 1);
    assert_eq!(front.rx_data(0, r.len()), r);

    // Close, then start over.
    write(&format!("{fe}/state"), "5");
    wait_until("backend closing", || read(&format!("{be}/state")) == "5");
    write(&format!("{fe}/state"), "6");
    wait_until("backend closed", || read(&format!("{be}/state")) == "6");
    assert!(dom.grants.lock().unwrap().is_empty(), "rings unmapped");
    assert_eq!(
        dom.evtchn.lock().unwrap().state(ptx),
        xen_shim::evtchn::PortState::Unbound { remote: 0 }
    );
    write(&format!("{fe}/state"), "1");
    wait_until("backend initwait", || read(&format!("{be}/state")) == "2");
    drop(h);
    assert_eq!(read(&format!("{be}/state")), "6");
}

#[test]
fn bad_mac_is_refused() {
    let cfg = VifConfig {
        mac: Some("00:16:3e:zz:00:00".into()),
        ..VifConfig::default()
    };
    assert!(matches!(guest_mac(&cfg), Err(NetbackError::BadMac(..))));
}
