//! Carrying out one blkif request against a disk image and the guest's
//! granted pages. Everything is checked before the image is touched: the
//! segments' sector ranges, the request's range on the disk, and every
//! grant (mapped with Xen's checks for the direction of the copy).

use std::sync::Arc;

use xen_shim::domain::Domain;
use xen_shim::grantmap::Mapping;

use super::proto::*;
use crate::disk::DiskImage;

/// The disk behind a vbd.
pub struct Disk {
    pub image: Arc<dyn DiskImage>,
    pub read_only: bool,
    /// Size in 512-byte sectors.
    pub sectors: u64,
}

/// Why a request failed (logged at debug level; the guest gets RSP_ERROR).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{0}")]
    Bad(&'static str),
    #[error("grant: {0}")]
    Grant(#[from] xen_shim::grantmap::GrantError),
    #[error("disk: {0}")]
    Disk(#[from] crate::disk::DiskError),
    #[error("guest memory: {0}")]
    Mem(#[from] xen_shim::mem::MemError),
}

/// Run `p`; the status for its response.
pub fn execute(dom: &Arc<Domain>, disk: &Disk, p: &Parsed, buf: &mut Vec<u8>) -> i16 {
    let r = match &p.req {
        Request::Bad { status, why } => {
            log::debug!("blkback: request {:#x} op {}: {why}", p.id, p.op);
            return *status;
        }
        Request::Rw {
            write,
            sector,
            segs,
        } => segments(dom, segs).and_then(|s| rw(dom, disk, *write, *sector, &s, buf)),
        Request::Flush => disk.image.flush().map_err(IoError::from),
        Request::Barrier { sector, segs } => disk
            .image
            .flush()
            .map_err(IoError::from)
            .and_then(|()| match segs.is_empty() {
                true => Ok(()),
                false => rw(dom, disk, true, *sector, segs, buf),
            })
            .and_then(|()| disk.image.flush().map_err(IoError::from)),
        Request::Discard { sector, nr_sectors } => discard(disk, *sector, *nr_sectors),
    };
    match r {
        Ok(()) => RSP_OKAY,
        Err(e) => {
            log::debug!("blkback: request {:#x} op {}: {e}", p.id, p.op);
            RSP_ERROR
        }
    }
}

/// The segment list of a read/write, reading indirect pages if needed.
pub(crate) fn segments(dom: &Arc<Domain>, segs: &Segments) -> Result<Vec<Segment>, IoError> {
    match segs {
        Segments::Direct(s) => Ok(s.clone()),
        Segments::Indirect { count, pages } => {
            let mut out = Vec::with_capacity(usize::from(*count));
            let mut page = [0u8; 4096];
            for (i, &gref) in pages.iter().enumerate() {
                let m = dom.map_grant(gref, false)?;
                dom.mem.read(m.gpa(), &mut page)?;
                let n =
                    (usize::from(*count) - i * SEGS_PER_INDIRECT_PAGE).min(SEGS_PER_INDIRECT_PAGE);
                out.extend((0..n).map(|j| Segment::parse(&page[j * 8..j * 8 + 8])));
            }
            Ok(out)
        }
    }
}

fn check_range(disk: &Disk, sector: u64, n: u64) -> Result<(), IoError> {
    match sector.checked_add(n) {
        Some(end) if end <= disk.sectors => Ok(()),
        _ => Err(IoError::Bad("request beyond the end of the disk")),
    }
}

fn rw(
    dom: &Arc<Domain>,
    disk: &Disk,
    write: bool,
    sector: u64,
    segs: &[Segment],
    buf: &mut Vec<u8>,
) -> Result<(), IoError> {
    if write && disk.read_only {
        return Err(IoError::Bad("write to a read-only disk"));
    }
    let mut total = 0u64;
    for s in segs {
        total += s
            .sectors()
            .ok_or(IoError::Bad("segment outside its page"))?;
    }
    check_range(disk, sector, total)?;
    // A read fills guest pages: they must be granted writable.
    let maps: Vec<Mapping> = segs
        .iter()
        .map(|s| dom.map_grant(s.gref, !write))
        .collect::<Result<_, _>>()?;
    let len = (total * SECTOR) as usize;
    buf.resize(len, 0);
    let offset = sector * SECTOR;
    if !write {
        disk.image.read_at(&mut buf[..len], offset)?;
    }
    let mut at = 0usize;
    for (s, m) in segs.iter().zip(&maps) {
        let gpa = m.gpa() + u64::from(s.first) * SECTOR;
        let n = (u64::from(s.last - s.first + 1) * SECTOR) as usize;
        if write {
            dom.mem.read(gpa, &mut buf[at..at + n])?;
        } else {
            dom.mem.write(gpa, &buf[at..at + n])?;
        }
        at += n;
    }
    if write {
        disk.image.write_at(&buf[..len], offset)?;
    }
    Ok(())
}

fn discard(disk: &Disk, sector: u64, n: u64) -> Result<(), IoError> {
    if disk.read_only {
        return Err(IoError::Bad("discard on a read-only disk"));
    }
    check_range(disk, sector, n)?;
    disk.image.discard(sector * SECTOR, n * SECTOR)?;
    Ok(())
}
