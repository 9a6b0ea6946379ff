//! The netif wire format (xen/include/public/io/netif.h): tx and rx
//! requests, responses and extra-info slots, all little-endian.

pub const PAGE: usize = 4096;

/// Bytes per tx ring entry (the union of request and response).
pub const TX_ENTRY: usize = 12;
/// Bytes per rx ring entry.
pub const RX_ENTRY: usize = 8;

/// XEN_NETIF_NR_SLOTS_MIN: data slots a packet may use in either direction.
pub const MAX_SLOTS: usize = 18;
/// Extra-info slots one tx packet may carry (one of each type at most).
pub const MAX_EXTRAS: usize = 4;
/// XEN_NETIF_MAX_TX_SIZE.
pub const MAX_PACKET: usize = 0xffff;
pub const ETH_HLEN: usize = 14;

pub const NETTXF_CSUM_BLANK: u16 = 1;
pub const NETTXF_DATA_VALIDATED: u16 = 2;
pub const NETTXF_MORE_DATA: u16 = 4;
pub const NETTXF_EXTRA_INFO: u16 = 8;

pub const NETRXF_DATA_VALIDATED: u16 = 1;
pub const NETRXF_CSUM_BLANK: u16 = 2;
pub const NETRXF_MORE_DATA: u16 = 4;
pub const NETRXF_EXTRA_INFO: u16 = 8;

pub const EXTRA_TYPE_GSO: u8 = 1;
pub const EXTRA_TYPE_MAX: u8 = 5;
pub const EXTRA_FLAG_MORE: u8 = 1;
pub const GSO_TYPE_TCPV4: u8 = 1;
pub const GSO_TYPE_TCPV6: u8 = 2;

pub const RSP_DROPPED: i16 = -2;
pub const RSP_ERROR: i16 = -1;
pub const RSP_OKAY: i16 = 0;
pub const RSP_NULL: i16 = 1;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// `struct netif_tx_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

impl TxRequest {
    pub fn parse(b: &[u8; TX_ENTRY]) -> TxRequest {
        TxRequest {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u16_at(b, 4),
            flags: u16_at(b, 6),
            id: u16_at(b, 8),
            size: u16_at(b, 10),
        }
    }

    pub fn encode(&self) -> [u8; TX_ENTRY] {
        let mut b = [0u8; TX_ENTRY];
        b[0..4].copy_from_slice(&self.gref.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..10].copy_from_slice(&self.id.to_le_bytes());
        b[10..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// `struct netif_extra_info` (8 meaningful bytes in either ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtraInfo {
    pub ty: u8,
    pub flags: u8,
    /// The type-specific bytes (for GSO: size, type, pad, features).
    pub data: [u8; 6],
}

impl ExtraInfo {
    pub fn parse(b: &[u8]) -> ExtraInfo {
        let mut data = [0u8; 6];
        data.copy_from_slice(&b[2..8]);
        ExtraInfo {
            ty: b[0],
            flags: b[1],
            data,
        }
    }

    pub fn gso(size: u16, gso_type: u8) -> ExtraInfo {
        let s = size.to_le_bytes();
        ExtraInfo {
            ty: EXTRA_TYPE_GSO,
            flags: 0,
            data: [s[0], s[1], gso_type, 0, 0, 0],
        }
    }

    pub fn gso_size(&self) -> u16 {
        u16_at(&self.data, 0)
    }

    pub fn gso_type(&self) -> u8 {
        self.data[2]
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.ty;
        b[1] = self.flags;
        b[2..8].copy_from_slice(&self.data);
        b
    }
}

/// `struct netif_tx_response`.
pub fn tx_response(id: u16, status: i16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[2..4].copy_from_slice(&status.to_le_bytes());
    b
}

/// `struct netif_rx_request`: (id, gref).
pub fn parse_rx_request(b: &[u8; RX_ENTRY]) -> (u16, u32) {
    (u16_at(b, 0), u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// `struct netif_rx_response`; `status` is the size when non-negative.
pub fn rx_response(id: u16, offset: u16, flags: u16, status: i16) -> [u8; RX_ENTRY] {
    let mut b = [0u8; RX_ENTRY];
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[2..4].copy_from_slice(&offset.to_le_bytes());
    b[4..6].copy_from_slice(&flags.to_le_bytes());
    b[6..8].copy_from_slice(&status.to_le_bytes());
    b
}

/// The virtio-net header the tap prepends with IFF_VNET_HDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

pub const VNET_HDR_LEN: usize = 10;
pub const VNET_F_NEEDS_CSUM: u8 = 1;
pub const VNET_F_DATA_VALID: u8 = 2;
pub const VNET_GSO_NONE: u8 = 0;
pub const VNET_GSO_TCPV4: u8 = 1;
pub const VNET_GSO_TCPV6: u8 = 4;
pub const VNET_GSO_ECN: u8 = 0x80;

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < VNET_HDR_LEN {
            return None;
        }
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(b, 2),
            gso_size: u16_at(b, 4),
            csum_start: u16_at(b, 6),
            csum_offset: u16_at(b, 8),
        })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        let r = TxRequest {
            gref: 0x1234_5678,
            offset: 10,
            flags: NETTXF_MORE_DATA,
            id: 7,
            size: 1500,
        };
        assert_eq!(TxRequest::parse(&r.encode()), r);
        let e = ExtraInfo::gso(1448, GSO_TYPE_TCPV4);
        let p = ExtraInfo::parse(&e.encode());
        assert_eq!((p.ty, p.gso_size(), p.gso_type()), (1, 1448, 1));
        assert_eq!(tx_response(3, RSP_ERROR), [3, 0, 0xff, 0xff]);
        assert_eq!(parse_rx_request(&[5, 0, 0, 0, 9, 0, 0, 0]), (5, 9));
        assert_eq!(rx_response(1, 0, 2, 60), [1, 0, 0, 0, 2, 0, 60, 0]);
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 74,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.encode()), Some(h));
    }
}
