//! File systems in a partition: recognise what is there by its magic numbers, and
//! read ext2/3/4 through the `ext4-view` crate.

use std::sync::mpsc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use crate::disk::{DiskError, DiskImage};

/// A byte range of a disk image, read with bounds checks.
#[derive(Clone, Copy)]
pub struct PartView<'a> {
    img: &'a dyn DiskImage,
    start: u64,
    size: u64,
}

impl<'a> PartView<'a> {
    pub fn new(img: &'a dyn DiskImage, start: u64, size: u64) -> PartView<'a> {
        PartView { img, start, size }
    }

    /// Reads `buf.len()` bytes at `offset` within the partition.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let len = buf.len() as u64;
        if offset > self.size || len > self.size - offset {
            return Err(format!(
                "read of {len} bytes at {offset} is beyond the partition end ({} bytes)",
                self.size
            ));
        }
        // start + size <= disk size, so this cannot overflow.
        self.img
            .read_at(buf, self.start + offset)
            .map_err(|e| e.to_string())
    }

    /// `len` bytes at `offset`, or None if that lies beyond the partition.
    fn bytes(&self, offset: u64, len: usize) -> Result<Option<Vec<u8>>, DiskError> {
        if offset > self.size || len as u64 > self.size - offset {
            return Ok(None);
        }
        let mut b = vec![0u8; len];
        self.img.read_at(&mut b, self.start + offset)?;
        Ok(Some(b))
    }
}

/// What a partition holds, as far as its magic numbers tell.
#[derive(Debug, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (readable).
    Ext,
    /// Something recognised that we cannot read, e.g. "XFS".
    Other(&'static str),
    /// Only zeros where file systems keep their superblocks.
    Empty,
    /// Nothing recognised.
    Unknown,
}

/// Recognises the file system in `view` by its superblock magic.
pub fn detect(view: &PartView) -> Result<FsKind, DiskError> {
    let Some(head) = view.bytes(0, 4096.min(view.size as usize))? else {
        return Ok(FsKind::Unknown);
    };
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(1024 + 56, &[0x53, 0xef]) {
        return Ok(FsKind::Ext);
    }
    let kind = if at(0, b"XFSB") {
        Some("XFS")
    } else if at(0, b"LUKS\xba\xbe") {
        Some("LUKS-encrypted")
    } else if at(512, b"LABELONE") && at(536, b"LVM2") {
        Some("LVM physical volume (not a filesystem)")
    } else if at(3, b"NTFS    ") {
        Some("NTFS")
    } else if at(3, b"EXFAT   ") {
        Some("exFAT")
    } else if at(54, b"FAT1") || at(82, b"FAT32") {
        Some("FAT (vfat)")
    } else if at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE") {
        Some("Linux swap (not a filesystem)")
    } else if at(1024, &[0x10, 0x20, 0xf5, 0xf2]) {
        Some("F2FS")
    } else {
        None
    };
    if let Some(k) = kind {
        return Ok(FsKind::Other(k));
    }
    if view.bytes(65536 + 64, 8)?.as_deref() == Some(b"_BHRfS_M") {
        return Ok(FsKind::Other("Btrfs"));
    }
    if view.bytes(32769, 5)?.as_deref() == Some(b"CD001") {
        return Ok(FsKind::Other("ISO 9660"));
    }
    if view.bytes(65536 + 52, 8)?.as_deref() == Some(b"ReIsEr2F")
        || view.bytes(65536 + 52, 9)?.as_deref() == Some(b"ReIsEr3Fs")
    {
        return Ok(FsKind::Other("ReiserFS"));
    }
    if head.iter().all(|&b| b == 0) {
        return Ok(FsKind::Empty);
    }
    Ok(FsKind::Unknown)
}

/// `Ext4Read` for ext4-view, which wants an owned ('static) reader: the reads are
/// forwarded over channels to a scoped thread that holds the borrowed image.
struct ChanReader {
    req: mpsc::Sender<(u64, usize)>,
    resp: mpsc::Receiver<Result<Vec<u8>, String>>,
}

impl Ext4Read for ChanReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.req
            .send((start_byte, dst.len()))
            .map_err(|_| "disk reader thread is gone")?;
        let data = self
            .resp
            .recv()
            .map_err(|_| "disk reader thread is gone")??;
        if data.len() != dst.len() {
            return Err("short read".into());
        }
        dst.copy_from_slice(&data);
        Ok(())
    }
}

/// Opens the ext2/3/4 file system in `view` and runs `f` on it.
///
/// `R: Send` keeps the (non-Send) `Ext4` from escaping, which would keep the reader
/// thread alive.
pub fn with_ext4<R: Send>(view: PartView<'_>, f: impl FnOnce(&Ext4) -> R) -> Result<R, Ext4Error> {
    std::thread::scope(|s| {
        let (req_tx, req_rx) = mpsc::channel::<(u64, usize)>();
        let (resp_tx, resp_rx) = mpsc::channel();
        s.spawn(move || {
            for (offset, len) in req_rx {
                let mut buf = vec![0u8; len];
                let r = view.read(offset, &mut buf).map(|()| buf);
                if resp_tx.send(r).is_err() {
                    break;
                }
            }
        });
        let reader = ChanReader {
            req: req_tx,
            resp: resp_rx,
        };
        // Dropping the file system drops the reader, which ends the thread.
        Ext4::load(Box::new(reader)).map(|fs| f(&fs))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pygrub::partition::tests::MemDisk;

    fn kind_of(data: Vec<u8>) -> FsKind {
        let d = MemDisk(data);
        detect(&PartView::new(&d, 0, d.0.len() as u64)).unwrap()
    }

    #[test]
    fn magic_numbers() {
        let mut d = vec![0u8; 128 << 10];
        assert_eq!(kind_of(d.clone()), FsKind::Empty);
        d[1080] = 0x53;
        d[1081] = 0xef;
        assert_eq!(kind_of(d.clone()), FsKind::Ext);
        let mut x = vec![0u8; 128 << 10];
        x[..4].copy_from_slice(b"XFSB");
        assert_eq!(kind_of(x), FsKind::Other("XFS"));
        let mut b = vec![0u8; 128 << 10];
        b[65536 + 64..65536 + 72].copy_from_slice(b"_BHRfS_M");
        assert_eq!(kind_of(b), FsKind::Other("Btrfs"));
        let mut f = vec![0u8; 128 << 10];
        f[82..87].copy_from_slice(b"FAT32");
        assert_eq!(kind_of(f), FsKind::Other("FAT (vfat)"));
        assert_eq!(kind_of(vec![1u8; 10]), FsKind::Unknown);
        assert_eq!(kind_of(vec![]), FsKind::Empty);
    }

    #[test]
    fn garbage_ext_superblock_is_an_error_not_a_panic() {
        let mut d = vec![0u8; 1 << 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
        }
        d[1080] = 0x53;
        d[1081] = 0xef;
        let disk = MemDisk(d);
        let view = PartView::new(&disk, 0, 1 << 20);
        assert_eq!(detect(&view).unwrap(), FsKind::Ext);
        assert!(with_ext4(view, |_| ()).is_err());
    }

    #[test]
    fn view_bounds() {
        let disk = MemDisk(vec![0u8; 4096]);
        let v = PartView::new(&disk, 1024, 2048);
        let mut b = [0u8; 16];
        assert!(v.read(2032, &mut b).is_ok());
        assert!(v.read(2033, &mut b).is_err());
        assert!(v.read(u64::MAX, &mut b).is_err());
    }
}
