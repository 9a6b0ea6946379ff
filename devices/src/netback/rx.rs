//! Guest receive: a frame from the tap (virtio-net header + Ethernet frame)
//! is copied into the pages of the frontend's posted rx requests, one page
//! per slot, with a GSO extra-info slot after the first when the frame is
//! a TCP segment to be split by the guest.
//!
//! Responses land in the slots of the requests they answer (netfront finds
//! its buffers by ring index): requests are taken in order into a stash
//! and each one consumed is answered once, in the same order.

use std::collections::VecDeque;
use std::sync::Arc;

use xen_shim::domain::Domain;
use xen_shim::grantmap::Mapping;

use super::csum;
use super::proto::*;
use crate::ring::BackRing;

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    Done,
    /// Not enough rx requests posted yet; try again later.
    NoRoom,
    /// Malformed, too large, or the frontend's buffers were bad.
    Dropped,
}

/// Offloads the frontend accepts on its receive side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxFeatures {
    pub csum: bool,
    pub ipv6_csum: bool,
    pub gso_tcpv4: bool,
    pub gso_tcpv6: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RxStats {
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
}

pub struct RxPath {
    ring: BackRing,
    dom: Arc<Domain>,
    stash: VecDeque<(u16, u32)>,
    scratch: Vec<u8>,
    pub features: RxFeatures,
    pub stats: RxStats,
}

impl RxPath {
    pub fn new(ring: BackRing, dom: Arc<Domain>, features: RxFeatures) -> RxPath {
        RxPath {
            ring,
            dom,
            stash: VecDeque::new(),
            scratch: Vec::new(),
            features,
            stats: RxStats::default(),
        }
    }

    pub fn ring(&self) -> &BackRing {
        &self.ring
    }

    fn refill(&mut self, want: usize) {
        let mut raw = [0u8; RX_ENTRY];
        while self.stash.len() < want && self.ring.next_request(&mut raw) {
            self.stash.push_back(parse_rx_request(&raw));
        }
    }

    /// Publish responses; true when the frontend wants a notification.
    pub fn push(&mut self) -> bool {
        self.ring.push_responses()
    }

    /// True when requests are waiting; otherwise asks to be notified.
    pub fn more(&mut self) -> bool {
        !self.stash.is_empty() || self.ring.final_check_for_requests()
    }

    /// Put one tap frame (virtio-net header first) into the guest.
    pub fn deliver(&mut self, pkt: &[u8]) -> Deliver {
        let r = self.deliver_inner(pkt);
        match r {
            Deliver::Done => {
                self.stats.packets += 1;
                self.stats.bytes += (pkt.len() - VNET_HDR_LEN) as u64;
            }
            Deliver::Dropped => self.stats.dropped += 1,
            Deliver::NoRoom => {}
        }
        r
    }

    fn deliver_inner(&mut self, pkt: &[u8]) -> Deliver {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.place(pkt, &mut scratch);
        self.scratch = scratch;
        r
    }

    fn place(&mut self, pkt: &[u8], scratch: &mut Vec<u8>) -> Deliver {
        let Some(hdr) = VnetHdr::parse(pkt) else {
            return Deliver::Dropped;
        };
        let frame = &pkt[VNET_HDR_LEN..];
        if frame.len() < ETH_HLEN || frame.len() > PAGE * (MAX_SLOTS - 1) {
            return Deliver::Dropped;
        }
        let ipv6 = frame.get(12..14) == Some(&[0x86, 0xdd]);
        let gso = match hdr.gso_type & !VNET_GSO_ECN {
            VNET_GSO_NONE => None,
            VNET_GSO_TCPV4 if self.features.gso_tcpv4 => Some(GSO_TYPE_TCPV4),
            VNET_GSO_TCPV6 if self.features.gso_tcpv6 => Some(GSO_TYPE_TCPV6),
            t => {
                log::debug!("netback rx: GSO type {t} the frontend cannot take");
                return Deliver::Dropped;
            }
        };
        let mut flags = 0;
        let mut frame = frame;
        if hdr.flags & VNET_F_NEEDS_CSUM != 0 {
            let offload = self.features.csum && (!ipv6 || self.features.ipv6_csum);
            if offload || gso.is_some() {
                flags = NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
            } else {
                scratch.clear();
                scratch.extend_from_slice(frame);
                let udp = csum::find_l4(frame).is_some_and(|l| l.proto == csum::IPPROTO_UDP);
                let (start, off) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
                if !csum::complete(scratch, start, off, udp) {
                    return Deliver::Dropped;
                }
                frame = scratch;
                flags = NETRXF_DATA_VALIDATED;
            }
        } else if hdr.flags & VNET_F_DATA_VALID != 0 {
            flags = NETRXF_DATA_VALIDATED;
        }
        let data_slots = frame.len().div_ceil(PAGE);
        let slots = data_slots + usize::from(gso.is_some());
        self.refill(slots);
        if self.stash.len() < slots {
            return Deliver::NoRoom;
        }
        let reqs: Vec<(u16, u32)> = self.stash.drain(..slots).collect();
        // Slot 1 is the extra-info slot when there is one.
        let data_reqs: Vec<(u16, u32)> = reqs
            .iter()
            .enumerate()
            .filter(|(i, _)| gso.is_none() || *i != 1)
            .map(|(_, r)| *r)
            .collect();
        let maps: Result<Vec<Mapping>, _> = data_reqs
            .iter()
            .map(|&(_, g)| self.dom.map_grant(g, true))
            .collect();
        let ok = match maps {
            Ok(maps) => maps
                .iter()
                .zip(frame.chunks(PAGE))
                .all(|(m, chunk)| self.dom.mem.write(m.gpa(), chunk).is_ok()),
            Err(e) => {
                log::debug!("netback rx: {e}");
                false
            }
        };
        if !ok {
            for (id, _) in reqs {
                self.ring.put_response(&rx_response(id, 0, 0, RSP_ERROR));
            }
            return Deliver::Dropped;
        }
        let mut chunks = frame.chunks(PAGE).peekable();
        for (i, (id, _)) in reqs.into_iter().enumerate() {
            if i == 1 && gso.is_some() {
                let e = ExtraInfo::gso(hdr.gso_size, gso.unwrap_or(0));
                self.ring.put_response(&e.encode());
                continue;
            }
            let len = chunks.next().map_or(0, <[u8]>::len);
            let mut f = if chunks.peek().is_some() {
                NETRXF_MORE_DATA
            } else {
                0
            };
            if i == 0 {
                f |= flags;
                if gso.is_some() {
                    f |= NETRXF_EXTRA_INFO;
                }
            }
            self.ring.put_response(&rx_response(id, 0, f, len as i16));
        }
        Deliver::Done
    }
}
