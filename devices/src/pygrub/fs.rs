//! File systems in a partition: recognise what is there by its magic numbers, and
//! read ext2/3/4 through the `ext4-view` crate.
//!
//! The superblock's geometry is checked against the partition before ext4-view sees
//! it ([`check_superblock`]): ext4-view 1.0 trusts it for allocations (one
//! `Vec::with_capacity` of 16 bytes per block group, up to 2^32 groups; a block
//! cache of eight blocks of up to 2 GiB each), and a failed allocation aborts.

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

/// Largest ext4 block size (the kernel's too: 64 KiB).
const MAX_BLOCK_LOG: u32 = 6;
/// Most block groups accepted: 128 TiB with 4 KiB blocks, more than any 1 KiB-block
/// file system can have; their descriptors take 16 MiB in ext4-view.
const MAX_GROUPS: u64 = 1 << 20;
/// `s_feature_incompat` bit for 64-bit block numbers (and `s_desc_size`).
const INCOMPAT_64BIT: u32 = 0x80;
/// `s_feature_ro_compat` bit for bigalloc (blocks per group beyond a bitmap block).
const RO_COMPAT_BIGALLOC: u32 = 0x200;

/// Why an ext2/3/4 file system could not be opened.
#[derive(thiserror::Error, Debug)]
pub enum Ext4OpenError {
    #[error("cannot read the superblock: {0}")]
    Read(String),
    #[error("superblock refused: {0}")]
    Superblock(#[from] SuperblockError),
    #[error(transparent)]
    Ext4(#[from] Ext4Error),
}

/// A superblock whose geometry does not fit the partition or the format.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    #[error("block size 2^(10+{0}) is not between 1 KiB and 64 KiB")]
    BlockSize(u32),
    #[error(
        "{blocks} blocks of {block_size} bytes are more than the partition's {part_size} bytes"
    )]
    BlocksCount {
        blocks: u64,
        block_size: u64,
        part_size: u64,
    },
    #[error("first data block {first} is not below the block count {blocks}")]
    FirstDataBlock { first: u32, blocks: u64 },
    #[error("{0} blocks per group is not between 1 and 8 per byte of a block")]
    BlocksPerGroup(u32),
    #[error("{0} inodes per group is not between 1 and 8 per byte of a block")]
    InodesPerGroup(u32),
    #[error("group descriptor size {0} is not a power of two from 64 to 1024")]
    DescSize(u16),
    #[error("{0} block groups are more than the {MAX_GROUPS} accepted")]
    TooManyGroups(u64),
    #[error("the descriptors of {groups} block groups do not fit in the file system")]
    DescriptorsBeyondEnd { groups: u64 },
}

fn le32(sb: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([sb[off], sb[off + 1], sb[off + 2], sb[off + 3]])
}

/// Checks the geometry of the 1024-byte superblock `sb` against a partition of
/// `part_size` bytes, as ext4-view will read it (it takes `s_blocks_count_hi` even
/// without the 64-bit feature) and as the kernel checks it at mount: block size,
/// block count, blocks and inodes per group, descriptor size, and that the group
/// count is bounded and its descriptor table lies within the file system.
pub fn check_superblock(sb: &[u8; 1024], part_size: u64) -> Result<(), SuperblockError> {
    let blocks = u64::from(le32(sb, 0x4)) | u64::from(le32(sb, 0x150)) << 32;
    let first = le32(sb, 0x14);
    let log = le32(sb, 0x18);
    let per_group = le32(sb, 0x20);
    let inodes_per_group = le32(sb, 0x28);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    let desc_size = u16::from_le_bytes([sb[0xfe], sb[0xff]]);

    if log > MAX_BLOCK_LOG {
        return Err(SuperblockError::BlockSize(log));
    }
    let block_size = 1024u64 << log;
    if blocks
        .checked_mul(block_size)
        .is_none_or(|bytes| bytes > part_size)
    {
        return Err(SuperblockError::BlocksCount {
            blocks,
            block_size,
            part_size,
        });
    }
    if u64::from(first) >= blocks {
        return Err(SuperblockError::FirstDataBlock { first, blocks });
    }
    let bitmap_bits = block_size * 8;
    if per_group == 0 || (ro_compat & RO_COMPAT_BIGALLOC == 0 && u64::from(per_group) > bitmap_bits)
    {
        return Err(SuperblockError::BlocksPerGroup(per_group));
    }
    if inodes_per_group == 0 || u64::from(inodes_per_group) > bitmap_bits {
        return Err(SuperblockError::InodesPerGroup(inodes_per_group));
    }
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        if !(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return Err(SuperblockError::DescSize(desc_size));
        }
        u64::from(desc_size)
    } else {
        32
    };
    let groups = (blocks - u64::from(first)).div_ceil(u64::from(per_group));
    if groups > MAX_GROUPS {
        return Err(SuperblockError::TooManyGroups(groups));
    }
    // The table starts in the block after the superblock's (where ext4-view reads
    // it); groups, desc_size and block_size are bounded, so this cannot overflow.
    let table_start = if block_size == 1024 { 2 } else { 1 };
    let table_blocks = (groups * desc_size).div_ceil(block_size);
    if table_start + table_blocks > blocks {
        return Err(SuperblockError::DescriptorsBeyondEnd { groups });
    }
    Ok(())
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

/// Opens the ext2/3/4 file system in `view` and runs `f` on it, once its superblock
/// passed [`check_superblock`].
///
/// `R: Send` keeps the (non-Send) `Ext4` from escaping, which would keep the reader
/// thread alive.
pub fn with_ext4<R: Send>(
    view: PartView<'_>,
    f: impl FnOnce(&Ext4) -> R,
) -> Result<R, Ext4OpenError> {
    let mut sb = [0u8; 1024];
    view.read(1024, &mut sb).map_err(Ext4OpenError::Read)?;
    check_superblock(&sb, view.size)?;
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
        Ext4::load(Box::new(reader))
            .map(|fs| f(&fs))
            .map_err(Ext4OpenError::from)
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

    /// A superblock ext4-view accepts, on a 1 MiB partition: 1 KiB blocks, one group.
    fn small_superblock() -> Vec<u8> {
        let mut d = vec![0u8; 1 << 20];
        let sb = &mut d[1024..2048];
        let put32 = |sb: &mut [u8], off: usize, v: u32| {
            sb[off..off + 4].copy_from_slice(&v.to_le_bytes());
        };
        put32(sb, 0x00, 128); // s_inodes_count
        put32(sb, 0x04, 1024); // s_blocks_count_lo
        put32(sb, 0x14, 1); // s_first_data_block
        put32(sb, 0x18, 0); // s_log_block_size: 1 KiB
        put32(sb, 0x20, 8192); // s_blocks_per_group
        put32(sb, 0x28, 128); // s_inodes_per_group
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes()); // s_inode_size
        put32(sb, 0x60, 0x2); // s_feature_incompat: filetype
        d
    }

    /// A superblock claiming 2^32 - 1 block groups (one block per group) made
    /// ext4-view reserve 64 GiB for their descriptors: the allocation failed and the
    /// monitor aborted ("memory allocation of 68719476720 bytes failed"), this test
    /// with it. The superblock is now refused before ext4-view sees it.
    #[test]
    fn superblock_with_too_many_groups_is_refused() {
        let mut d = small_superblock();
        let sb = &mut d[1024..2048];
        sb[0x04..0x08].copy_from_slice(&u32::MAX.to_le_bytes()); // s_blocks_count_lo
        sb[0x14..0x18].copy_from_slice(&0u32.to_le_bytes()); // s_first_data_block
        sb[0x20..0x24].copy_from_slice(&1u32.to_le_bytes()); // s_blocks_per_group
        let disk = MemDisk(d);
        let view = PartView::new(&disk, 0, 1 << 20);
        assert_eq!(detect(&view).unwrap(), FsKind::Ext);
        let e = with_ext4(view, |_| ()).unwrap_err();
        assert!(matches!(e, Ext4OpenError::Superblock(_)), "{e}");
        assert!(e.to_string().starts_with("superblock refused: "), "{e}");
        // The same groups on a partition big enough for the blocks (a sparse image).
        let mut sb: [u8; 1024] = disk.0[1024..2048].try_into().unwrap();
        assert_eq!(
            check_superblock(&sb, 4 << 40),
            Err(SuperblockError::TooManyGroups(u64::from(u32::MAX)))
        );
        // Fewer, bigger groups make it a file system ext4-view may try.
        sb[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        assert_eq!(check_superblock(&sb, 4 << 40), Ok(()));
    }

    /// Each field the check bounds, changed one at a time on a valid superblock.
    #[test]
    fn superblock_geometry_checks() {
        use SuperblockError as E;
        let base = small_superblock();
        let sb_of = |d: &[u8]| -> [u8; 1024] { d[1024..2048].try_into().unwrap() };
        let with = |fields: &[(usize, u32)], part: u64| {
            let mut sb = sb_of(&base);
            for &(off, v) in fields {
                sb[off..off + 4].copy_from_slice(&v.to_le_bytes());
            }
            check_superblock(&sb, part)
        };
        let mib = 1 << 20;
        assert_eq!(with(&[], mib), Ok(()));
        // 2 GiB blocks: ext4-view 1.0 would fill a cache of eight of them.
        assert_eq!(with(&[(0x18, 21)], mib), Err(E::BlockSize(21)));
        assert_eq!(with(&[(0x18, 7)], mib), Err(E::BlockSize(7)));
        let too_big = |blocks, part_size| E::BlocksCount {
            blocks,
            block_size: 1024,
            part_size,
        };
        assert_eq!(with(&[(0x04, 1025)], mib), Err(too_big(1025, mib)));
        assert_eq!(with(&[], mib / 2), Err(too_big(1024, mib / 2)));
        assert_eq!(
            with(&[(0x150, 1)], mib),
            Err(too_big((1 << 32) + 1024, mib))
        );
        assert_eq!(
            with(&[(0x04, u32::MAX), (0x150, u32::MAX), (0x18, 6)], u64::MAX),
            Err(E::BlocksCount {
                blocks: u64::MAX,
                block_size: 65536,
                part_size: u64::MAX
            })
        );
        assert_eq!(
            with(&[(0x14, 1024)], mib),
            Err(E::FirstDataBlock {
                first: 1024,
                blocks: 1024
            })
        );
        assert_eq!(with(&[(0x20, 0)], mib), Err(E::BlocksPerGroup(0)));
        assert_eq!(with(&[(0x20, 8193)], mib), Err(E::BlocksPerGroup(8193)));
        // bigalloc: more blocks per group than bitmap bits is normal.
        assert_eq!(with(&[(0x20, 8193), (0x64, 0x200)], mib), Ok(()));
        assert_eq!(with(&[(0x28, 0)], mib), Err(E::InodesPerGroup(0)));
        assert_eq!(with(&[(0x28, 8193)], mib), Err(E::InodesPerGroup(8193)));
        // 64-bit: s_desc_size (at 0xfe, u16) counts; without it, 32.
        let desc = |size: u16| (0xfc, u32::from(size) << 16);
        assert_eq!(with(&[desc(0)], mib), Ok(()));
        for bad in [0, 32, 96, 2048, u16::MAX] {
            assert_eq!(with(&[(0x60, 0x82), desc(bad)], mib), Err(E::DescSize(bad)));
        }
        assert_eq!(with(&[(0x60, 0x82), desc(64)], mib), Ok(()));
        // 2^21 one-block groups on a 2 GiB partition.
        assert_eq!(
            with(&[(0x04, 1 << 21), (0x14, 0), (0x20, 1)], 2 << 30),
            Err(E::TooManyGroups(1 << 21))
        );
        // 1023 groups of 1 KiB descriptors need 1023 blocks after block 1.
        assert_eq!(
            with(&[(0x20, 1), (0x60, 0x82), desc(1024)], mib),
            Err(E::DescriptorsBeyondEnd { groups: 1023 })
        );
        assert_eq!(with(&[(0x20, 1), (0x60, 0x82), desc(512)], mib), Ok(()));
    }

    /// File systems mkfs.ext4 makes pass the check and open.
    #[test]
    fn mkfs_superblocks_pass() {
        use crate::disk::test_util::{have_tool, TempDir};
        if !have_tool("mkfs.ext4", "pygrub::fs::mkfs_superblocks_pass") {
            return;
        }
        let dir = TempDir::new("sb-mkfs");
        let img = dir.path().join("fs.img");
        let opts: [&[&str]; 4] = [
            &["-b", "1024"],
            &["-b", "4096", "-O", "64bit"],
            &["-b", "4096", "-O", "^64bit,^metadata_csum", "-t", "ext3"],
            &["-t", "ext2"],
        ];
        for o in opts {
            let f = std::fs::File::create(&img).unwrap();
            f.set_len(64 << 20).unwrap();
            drop(f);
            let out = std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .args(o)
                .arg(&img)
                .output()
                .unwrap();
            assert!(out.status.success(), "mkfs.ext4 {o:?}: {out:?}");
            let data = std::fs::read(&img).unwrap();
            let sb: [u8; 1024] = data[1024..2048].try_into().unwrap();
            assert_eq!(check_superblock(&sb, 64 << 20), Ok(()), "{o:?}");
            let disk = MemDisk(data);
            let view = PartView::new(&disk, 0, 64 << 20);
            let entries = with_ext4(view, |fs| fs.read_dir("/").map(|d| d.count()));
            assert!(matches!(entries, Ok(Ok(n)) if n >= 3), "{o:?}: {entries:?}");
        }
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
