//! Guest transmit: tx requests (possibly several slots and extra-info
//! slots per packet) become one frame with a virtio-net header for the tap.
//!
//! Every slot gets exactly one response: the packet's data slots OKAY or
//! ERROR, its extra-info slots NULL. A packet with a bad grant, a slot that
//! crosses its page, sizes that do not add up, too many slots or an unknown
//! extra type is answered with errors and dropped; nothing else happens.

use std::sync::Arc;

use xen_shim::domain::Domain;

use super::csum;
use super::proto::*;
use crate::ring::BackRing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Data(TxRequest),
    Extra,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Extra,
    Frag,
}

/// A packet whose slots are still arriving.
struct Packet {
    slots: Vec<Slot>,
    want: Want,
    first_more: bool,
    flags: u16,
    gso: Option<ExtraInfo>,
    bad: bool,
}

/// Counters for logs and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxStats {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
}

pub struct TxPath {
    ring: BackRing,
    dom: Arc<Domain>,
    pkt: Option<Packet>,
    frame: Vec<u8>,
    pub stats: TxStats,
}

impl TxPath {
    pub fn new(ring: BackRing, dom: Arc<Domain>) -> TxPath {
        TxPath {
            ring,
            dom,
            pkt: None,
            frame: Vec::with_capacity(VNET_HDR_LEN + MAX_PACKET),
            stats: TxStats::default(),
        }
    }

    pub fn ring(&self) -> &BackRing {
        &self.ring
    }

    /// Consume the requests waiting (at most one ring's worth), hand each
    /// complete good packet to `out` as virtio-net header + frame, and
    /// publish the responses. True when the frontend wants a notification.
    pub fn poll(&mut self, out: &mut dyn FnMut(&[u8])) -> bool {
        let mut raw = [0u8; TX_ENTRY];
        let mut n = 0;
        while n < self.ring.size() && self.ring.next_request(&mut raw) {
            n += 1;
            self.on_slot(&raw, out);
        }
        self.ring.push_responses()
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS on the tx ring.
    pub fn more(&mut self) -> bool {
        self.ring.final_check_for_requests()
    }

    fn on_slot(&mut self, raw: &[u8; TX_ENTRY], out: &mut dyn FnMut(&[u8])) {
        let mut p = match self.pkt.take() {
            None => {
                let r = TxRequest::parse(raw);
                let p = Packet {
                    slots: vec![Slot::Data(r)],
                    want: Want::Extra,
                    first_more: r.flags & NETTXF_MORE_DATA != 0,
                    flags: r.flags,
                    gso: None,
                    bad: false,
                };
                if r.flags & NETTXF_EXTRA_INFO != 0 || p.first_more {
                    let mut p = p;
                    if r.flags & NETTXF_EXTRA_INFO == 0 {
                        p.want = Want::Frag;
                    }
                    self.pkt = Some(p);
                } else {
                    self.finish(p, out);
                }
                return;
            }
            Some(p) => p,
        };
        let done = match p.want {
            Want::Extra => {
                let e = ExtraInfo::parse(raw);
                p.slots.push(Slot::Extra);
                let extras = p.slots.iter().filter(|s| **s == Slot::Extra).count();
                if e.ty == 0 || e.ty >= EXTRA_TYPE_MAX || extras > MAX_EXTRAS {
                    log::debug!("netback tx: bad extra info type {}", e.ty);
                    p.bad = true;
                } else if e.ty == EXTRA_TYPE_GSO {
                    p.gso = Some(e);
                }
                if e.flags & EXTRA_FLAG_MORE != 0 && extras <= MAX_EXTRAS {
                    false
                } else if p.first_more {
                    p.want = Want::Frag;
                    false
                } else {
                    true
                }
            }
            Want::Frag => {
                let r = TxRequest::parse(raw);
                p.slots.push(Slot::Data(r));
                r.flags & NETTXF_MORE_DATA == 0
            }
        };
        let data = p
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Data(_)))
            .count();
        if data > MAX_SLOTS {
            // Answer what we hold now and the rest of the chain as it comes.
            p.bad = true;
            self.respond(&p.slots, RSP_ERROR);
            p.slots.clear();
        }
        if done {
            self.finish(p, out);
        } else {
            self.pkt = Some(p);
        }
    }

    fn respond(&mut self, slots: &[Slot], status: i16) {
        for s in slots {
            let rsp = match s {
                Slot::Data(r) => tx_response(r.id, status),
                Slot::Extra => tx_response(0, RSP_NULL),
            };
            self.ring.put_response(&rsp);
        }
    }

    fn finish(&mut self, p: Packet, out: &mut dyn FnMut(&[u8])) {
        let ok = !p.bad && self.build(&p);
        if ok {
            out(&self.frame);
            self.stats.packets += 1;
            self.stats.bytes += (self.frame.len() - VNET_HDR_LEN) as u64;
        } else {
            self.stats.errors += 1;
        }
        self.respond(&p.slots, if ok { RSP_OKAY } else { RSP_ERROR });
    }

    /// Copy the packet out of the guest into `self.frame`; false when any
    /// slot is invalid.
    fn build(&mut self, p: &Packet) -> bool {
        let data: Vec<TxRequest> = p
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Data(r) => Some(*r),
                Slot::Extra => None,
            })
            .collect();
        let Some(first) = data.first() else {
            return false;
        };
        let total = usize::from(first.size);
        let rest: usize = data[1..].iter().map(|r| usize::from(r.size)).sum();
        if total < ETH_HLEN || rest > total {
            log::debug!("netback tx: packet size {total} with {rest} bytes of fragments");
            return false;
        }
        self.frame.clear();
        self.frame.resize(VNET_HDR_LEN, 0);
        for (i, r) in data.iter().enumerate() {
            let len = if i == 0 {
                total - rest
            } else {
                usize::from(r.size)
            };
            if usize::from(r.offset) + len > PAGE {
                log::debug!("netback tx: slot {}+{len} crosses its page", r.offset);
                return false;
            }
            let m = match self.dom.map_grant(r.gref, false) {
                Ok(m) => m,
                Err(e) => {
                    log::debug!("netback tx: {e}");
                    return false;
                }
            };
            let at = self.frame.len();
            self.frame.resize(at + len, 0);
            if self
                .dom
                .mem
                .read(m.gpa() + u64::from(r.offset), &mut self.frame[at..])
                .is_err()
            {
                return false;
            }
        }
        let hdr = match offload_header(&mut self.frame[VNET_HDR_LEN..], p.flags, p.gso) {
            Some(h) => h,
            None => return false,
        };
        self.frame[..VNET_HDR_LEN].copy_from_slice(&hdr.encode());
        true
    }
}

/// The virtio-net header for a guest frame with NETTXF `flags` and an
/// optional GSO extra; None when the offload asked for cannot be done.
fn offload_header(frame: &mut [u8], flags: u16, gso: Option<ExtraInfo>) -> Option<VnetHdr> {
    let mut h = VnetHdr::default();
    let l4 = csum::find_l4(frame);
    if let Some(g) = gso {
        let ty = match g.gso_type() {
            GSO_TYPE_TCPV4 => VNET_GSO_TCPV4,
            GSO_TYPE_TCPV6 => VNET_GSO_TCPV6,
            t => {
                log::debug!("netback tx: bad GSO type {t}");
                return None;
            }
        };
        let l4 = l4.filter(|l| l.proto == csum::IPPROTO_TCP && l.ipv6 == (ty == VNET_GSO_TCPV6));
        let (Some(l4), true) = (l4, g.gso_size() > 0) else {
            log::debug!("netback tx: GSO packet without a TCP header or size");
            return None;
        };
        h.gso_type = ty;
        h.gso_size = g.gso_size();
        h.hdr_len = (l4.start + l4.header_len(frame)?) as u16;
        if flags & NETTXF_CSUM_BLANK == 0 && !csum::set_partial(frame, &l4) {
            return None;
        }
        h.flags = VNET_F_NEEDS_CSUM;
        h.csum_start = l4.start as u16;
        h.csum_offset = l4.csum_offset() as u16;
    } else if flags & NETTXF_CSUM_BLANK != 0 {
        if let Some(l4) = l4 {
            h.flags = VNET_F_NEEDS_CSUM;
            h.csum_start = l4.start as u16;
            h.csum_offset = l4.csum_offset() as u16;
        }
    }
    Some(h)
}
