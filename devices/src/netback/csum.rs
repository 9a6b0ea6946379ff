//! Just enough header parsing to hand checksum and segmentation offloads
//! between the netif protocol (which names no offsets) and the tap's
//! virtio-net header (which needs them), and Internet checksums in software.

use super::proto::ETH_HLEN;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Where a frame's transport header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    /// Offset of the IP header.
    pub l3: usize,
    pub ipv6: bool,
    /// Offset of the TCP/UDP header.
    pub start: usize,
    pub proto: u8,
}

impl L4 {
    /// Offset of the checksum field inside the transport header.
    pub fn csum_offset(&self) -> usize {
        if self.proto == IPPROTO_TCP {
            16
        } else {
            6
        }
    }

    /// Transport header length (TCP data offset; 8 for UDP).
    pub fn header_len(&self, frame: &[u8]) -> Option<usize> {
        if self.proto == IPPROTO_UDP {
            return Some(8);
        }
        let doff = usize::from(*frame.get(self.start + 12)? >> 4) * 4;
        (doff >= 20 && self.start + doff <= frame.len()).then_some(doff)
    }
}

/// Find the TCP or UDP header of an Ethernet frame (IPv4 or IPv6, one VLAN
/// tag allowed, no fragments); None for anything else or a short frame.
pub fn find_l4(frame: &[u8]) -> Option<L4> {
    let mut l3 = ETH_HLEN;
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        l3 += 4;
    }
    let (start, proto, ipv6) = match ethertype {
        0x0800 => {
            let ip = frame.get(l3..l3 + 20)?;
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ip[0] >> 4 != 4 || ihl < 20 || frag != 0 {
                return None;
            }
            (l3 + ihl, ip[9], false)
        }
        0x86dd => {
            let ip = frame.get(l3..l3 + 40)?;
            let mut next = ip[6];
            let mut at = l3 + 40;
            // Hop-by-hop, routing and destination options may precede.
            for _ in 0..4 {
                if !matches!(next, 0 | 43 | 60) {
                    break;
                }
                let h = frame.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            (at, next, true)
        }
        _ => return None,
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let l4 = L4 {
        l3,
        ipv6,
        start,
        proto,
    };
    (start + l4.csum_offset() + 2 <= frame.len()).then_some(l4)
}

/// One's-complement sum of `data` added to `sum` (not folded).
pub fn sum(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The folded (uncomplemented) pseudo-header sum of the transport segment
/// that runs from `l4.start` to the end of the IP packet.
pub fn pseudo_header(frame: &[u8], l4: &L4) -> Option<u16> {
    let mut s = u64::from(l4.proto);
    if l4.ipv6 {
        let ip = frame.get(l4.l3..l4.l3 + 40)?;
        let total = l4.l3 + 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        s = sum(s, &ip[8..40]);
        s += total.checked_sub(l4.start)? as u64;
    } else {
        let ip = frame.get(l4.l3..l4.l3 + 20)?;
        let total = l4.l3 + usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        s = sum(s, &ip[12..20]);
        s += total.checked_sub(l4.start)? as u64;
    }
    Some(fold(s))
}

/// Put the pseudo-header sum in the checksum field, as a sender that
/// offloads the checksum leaves it (CHECKSUM_PARTIAL).
pub fn set_partial(frame: &mut [u8], l4: &L4) -> bool {
    let Some(p) = pseudo_header(frame, l4) else {
        return false;
    };
    let at = l4.start + l4.csum_offset();
    match frame.get_mut(at..at + 2) {
        Some(f) => {
            f.copy_from_slice(&p.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Finish a partial checksum: sum from `start` to the end (the field holds
/// the pseudo-header sum) and store the complement at `start + offset`.
pub fn complete(frame: &mut [u8], start: usize, offset: usize, udp: bool) -> bool {
    let at = start.saturating_add(offset);
    if start > frame.len() || at.saturating_add(2) > frame.len() {
        return false;
    }
    let mut c = !fold(sum(0, &frame[start..]));
    if udp && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP or TCP frame with `payload`.
    pub fn ipv4_frame(proto: u8, payload: &[u8]) -> Vec<u8> {
        let l4len = if proto == IPPROTO_TCP { 20 } else { 8 };
        let mut f = vec![0u8; 14 + 20 + l4len];
        f[0..6].copy_from_slice(&[0x00, 0x16, 0x3e, 1, 2, 3]);
        f[6..12].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + l4len + payload.len()) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 99, 0, 2]);
        ip[16..20].copy_from_slice(&[10, 99, 0, 1]);
        let c = !fold(sum(0, &f[14..34]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        if proto == IPPROTO_TCP {
            f[34 + 12] = 5 << 4;
        } else {
            f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    /// True when the transport checksum of a frame verifies.
    pub fn l4_ok(frame: &[u8]) -> bool {
        let l4 = find_l4(frame).unwrap();
        let p = pseudo_header(frame, &l4).unwrap();
        fold(sum(u64::from(p), &frame[l4.start..])) == 0xffff
    }

    #[test]
    fn partial_then_complete_verifies() {
        for proto in [IPPROTO_TCP, IPPROTO_UDP] {
            let mut f = ipv4_frame(proto, b"hello, checksum world!!");
            let l4 = find_l4(&f).unwrap();
            assert_eq!(l4.start, 34);
            assert!(set_partial(&mut f, &l4));
            assert!(complete(
                &mut f,
                l4.start,
                l4.csum_offset(),
                proto == IPPROTO_UDP
            ));
            assert!(l4_ok(&f));
        }
    }

    #[test]
    fn rejects_what_it_cannot_parse() {
        assert_eq!(find_l4(&[0; 10]), None);
        let mut f = ipv4_frame(IPPROTO_UDP, b"x");
        f[14 + 9] = 1; // ICMP
        assert_eq!(find_l4(&f), None);
        let mut f = ipv4_frame(IPPROTO_TCP, b"x");
        f[14] = 0x4f; // ihl 60 > frame
        assert_eq!(find_l4(&f), None);
        assert!(!complete(&mut [0u8; 4], 2, 6, false));
        assert!(!complete(&mut [0u8; 4], usize::MAX, 6, false));
    }
}
