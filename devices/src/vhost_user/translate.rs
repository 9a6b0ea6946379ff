//! The translation of one blkif request into a virtio-blk chain in the
//! shadow region, and of its status back, without the vhost-user
//! connection (unit-tested against a test domain and plain memory).

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::ByteValued;
use xen_shim::grantmap::Mapping;

use super::conn::BlkInfo;
use super::shadow::{Shadow, SHADOW_GPA};
use super::vring::{DriverRing, VringLayout};
use crate::blkback::proto::{self, Parsed, Request, Segment, Segments};
use crate::xenbus::BackendCtx;

/// Request slots (virtqueue size): the most requests in flight. A ring of
/// `ring-page-order` 3 holds 256 requests.
pub const QUEUE_SIZE: u16 = 256;
pub const MAX_RING_ORDER: u32 = 3;
/// Data descriptors per request at most (indirect segments).
pub const MAX_DATA_DESCS: usize = proto::MAX_INDIRECT_SEGMENTS as usize;
const TABLE: usize = 16 * (MAX_DATA_DESCS + 2);
const HDR: usize = TABLE;
const DISCARD: usize = HDR + 16;
const STATUS: usize = DISCARD + 16;
const SLOT_STRIDE: usize = (STATUS + 1).div_ceil(64) * 64;

/// Queue `q`'s layout in the shadow region (queues one after another), and
/// the first byte after it.
pub fn layout(q: usize) -> (VringLayout, usize) {
    let one = VringLayout::at(0, QUEUE_SIZE).end + SLOT_STRIDE * usize::from(QUEUE_SIZE);
    let l = VringLayout::at(q * one, QUEUE_SIZE);
    (l, (q + 1) * one)
}

pub fn slot_off(l: &VringLayout, s: u16) -> usize {
    l.end + SLOT_STRIDE * usize::from(s)
}

/// A request handed to the backend.
pub struct Slot {
    pub id: u64,
    pub op: u8,
    /// The granted pages, mapped until the backend is done with them.
    pub _maps: Vec<Mapping>,
    /// What is left of a discard split into the backend's maximum.
    pub discard_rest: Option<(u64, u64)>,
}

/// Why a request cannot go to the backend (the guest gets RSP_ERROR).
#[derive(Debug, thiserror::Error)]
enum ReqError {
    #[error("{0}")]
    Bad(&'static str),
    #[error(transparent)]
    Io(#[from] crate::blkback::io::IoError),
    #[error("grant: {0}")]
    Grant(#[from] xen_shim::grantmap::GrantError),
}

/// The shadow region, the queue and the disk's facts, for building chains.
pub struct Translator {
    pub ctx: BackendCtx,
    pub shadow: std::sync::Arc<Shadow>,
    pub vring: DriverRing,
    pub info: BlkInfo,
    pub read_only: bool,
    pub name: String,
}

impl Translator {
    /// The blkif status of the chain in slot `s`.
    pub fn status(&self, s: u16) -> i16 {
        let mut b = [0xffu8];
        self.shadow
            .read(slot_off(&self.vring.layout, s) + STATUS, &mut b);
        match u32::from(b[0]) {
            VIRTIO_BLK_S_OK => proto::RSP_OKAY,
            VIRTIO_BLK_S_UNSUPP => proto::RSP_EOPNOTSUPP,
            _ => proto::RSP_ERROR,
        }
    }

    /// Build the chain for `p` in slot `s`, or the status to answer now.
    pub fn submit(&mut self, s: u16, p: &Parsed) -> Result<Slot, i16> {
        let slot = |maps, rest| Slot {
            id: p.id,
            op: p.op,
            _maps: maps,
            discard_rest: rest,
        };
        match &p.req {
            Request::Bad { status, why } => {
                log::debug!("vhost-user {}: request {:#x}: {why}", self.name, p.id);
                Err(*status)
            }
            Request::Rw {
                write,
                sector,
                segs,
            } => match self.rw(s, *write, *sector, segs) {
                Ok(maps) => Ok(slot(maps, None)),
                Err(e) => {
                    log::debug!("vhost-user {}: request {:#x}: {e}", self.name, p.id);
                    Err(proto::RSP_ERROR)
                }
            },
            Request::Flush if self.info.flush => {
                self.chain(s, VIRTIO_BLK_T_FLUSH, 0, &[]);
                Ok(slot(Vec::new(), None))
            }
            Request::Flush | Request::Barrier { .. } => Err(proto::RSP_EOPNOTSUPP),
            Request::Discard { sector, nr_sectors } => {
                if self.info.max_discard_sectors.is_none() {
                    return Err(proto::RSP_EOPNOTSUPP);
                }
                if self.read_only || !self.in_range(*sector, *nr_sectors) {
                    return Err(proto::RSP_ERROR);
                }
                if *nr_sectors == 0 {
                    return Err(proto::RSP_OKAY);
                }
                let rest = self.discard_piece(s, *sector, *nr_sectors);
                Ok(slot(Vec::new(), rest))
            }
        }
    }

    fn in_range(&self, sector: u64, n: u64) -> bool {
        sector
            .checked_add(n)
            .is_some_and(|e| e <= self.info.capacity)
    }

    /// Put the next piece of a discard in slot `s`; what remains after it.
    pub fn discard_piece(&self, s: u16, sector: u64, n: u64) -> Option<(u64, u64)> {
        let max = u64::from(self.info.max_discard_sectors.unwrap_or(1).max(1));
        let now = n.min(max);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&sector.to_le_bytes());
        d[8..12].copy_from_slice(&(now as u32).to_le_bytes());
        let off = slot_off(&self.vring.layout, s);
        self.shadow.write(off + DISCARD, &d);
        let data = [Descriptor::new(
            SHADOW_GPA + (off + DISCARD) as u64,
            16,
            0,
            0,
        )];
        self.chain(s, VIRTIO_BLK_T_DISCARD, 0, &data);
        (n > now).then(|| (sector + now, n - now))
    }

    /// A read or write: grants mapped (writable for a read: the backend
    /// fills the pages), checked against the disk, descriptors built.
    fn rw(
        &mut self,
        s: u16,
        write: bool,
        sector: u64,
        segs: &Segments,
    ) -> Result<Vec<Mapping>, ReqError> {
        if write && self.read_only {
            return Err(ReqError::Bad("write to a read-only disk"));
        }
        let segs: Vec<Segment> = crate::blkback::io::segments(&self.ctx.dom, segs)?;
        let mut total = 0u64;
        for g in &segs {
            total += g
                .sectors()
                .ok_or(ReqError::Bad("segment outside its page"))?;
        }
        if !self.in_range(sector, total) {
            return Err(ReqError::Bad("request beyond the end of the disk"));
        }
        let maps: Vec<Mapping> = segs
            .iter()
            .map(|g| self.ctx.dom.map_grant(g.gref, !write))
            .collect::<Result<_, _>>()?;
        let flags = if write { 0 } else { VRING_DESC_F_WRITE as u16 };
        let ram = self.ram_size();
        let mut data: Vec<Descriptor> = Vec::with_capacity(segs.len());
        for (g, m) in segs.iter().zip(&maps) {
            let addr = m.gpa() + u64::from(g.first) * proto::SECTOR;
            let len = u32::from(g.last - g.first + 1) * proto::SECTOR as u32;
            if addr.checked_add(u64::from(len)).is_none_or(|e| e > ram) {
                return Err(ReqError::Bad("granted frame outside the shared RAM"));
            }
            match data.last_mut() {
                Some(d) if d.addr().0 + u64::from(d.len()) == addr => {
                    *d = Descriptor::new(d.addr().0, d.len() + len, flags, 0);
                }
                _ => data.push(Descriptor::new(addr, len, flags, 0)),
            }
        }
        if self.info.seg_max.is_some_and(|m| data.len() > m as usize) {
            return Err(ReqError::Bad("more segments than the backend's seg_max"));
        }
        let t = if write {
            VIRTIO_BLK_T_OUT
        } else {
            VIRTIO_BLK_T_IN
        };
        self.chain(s, t, sector, &data);
        Ok(maps)
    }

    fn ram_size(&self) -> u64 {
        self.ctx.dom.layout.nr_pages * 4096
    }

    /// Write slot `s`'s indirect table: header, `data`, status; and point
    /// queue descriptor `s` at it.
    fn chain(&self, s: u16, kind: u32, sector: u64, data: &[Descriptor]) {
        let off = slot_off(&self.vring.layout, s);
        let gpa = |o: usize| SHADOW_GPA + (off + o) as u64;
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        self.shadow.write(off + HDR, &hdr);
        self.shadow.write(off + STATUS, &[0xff]);
        let n = data.len() + 2;
        let next = VRING_DESC_F_NEXT as u16;
        let mut table = Vec::with_capacity(n);
        table.push(Descriptor::new(gpa(HDR), 16, next, 1));
        for (i, d) in data.iter().enumerate() {
            table.push(Descriptor::new(
                d.addr().0,
                d.len(),
                d.flags() | next,
                (i + 2) as u16,
            ));
        }
        table.push(Descriptor::new(
            gpa(STATUS),
            1,
            VRING_DESC_F_WRITE as u16,
            0,
        ));
        let mut bytes = Vec::with_capacity(16 * n);
        for d in &table {
            bytes.extend_from_slice(d.as_slice());
        }
        self.shadow.write(off, &bytes);
        self.vring.set_desc(
            &self.shadow,
            s,
            Descriptor::new(gpa(0), (16 * n) as u32, VRING_DESC_F_INDIRECT as u16, 0),
        );
    }
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
