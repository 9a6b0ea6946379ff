//! Raw images: a plain file or block device, accessed with pread/pwrite.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{check_range, DiskError, DiskImage};

/// A raw disk image. The size is fixed when it is opened.
pub struct RawImage {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl RawImage {
    /// Opens `path` O_RDONLY or O_RDWR.
    pub fn open(path: &Path, read_only: bool) -> Result<RawImage, DiskError> {
        let open_err = |err| DiskError::Open {
            path: path.to_path_buf(),
            err,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        // Seeking to the end also sizes block devices, whose metadata length is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        Ok(RawImage {
            file,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    fn io_err(&self, op: &'static str, offset: u64, len: usize, source: io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            op,
            offset,
            len: len as u64,
            source,
        }
    }
}

impl DiskImage for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        check_range(&self.path, "read", offset, buf.len() as u64, self.size)?;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                // The file shrank under us: what lies beyond its end reads as zeros.
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err("read", offset, buf.len(), e)),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
                op: "write",
            });
        }
        check_range(&self.path, "write", offset, buf.len() as u64, self.size)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io_err("write", offset, buf.len(), e))
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| DiskError::Flush {
            path: self.path.clone(),
            source,
        })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
                op: "discard",
            });
        }
        check_range(&self.path, "discard", offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Ok(()); // beyond what fallocate can address: nothing to free
        };
        loop {
            // SAFETY: fallocate on a file descriptor we own; no memory is passed.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    l,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Discard is advisory: a file system or device without hole punching
                // just keeps the data.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                    log::debug!("disk {}: discard unsupported: {e}", self.path.display());
                    return Ok(());
                }
                _ => return Err(self.io_err("discard", offset, len as usize, e)),
            }
        }
    }

    fn discard_supported(&self) -> bool {
        !self.read_only
    }

    fn format(&self) -> &'static str {
        "raw"
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    fn image(dir: &TempDir, size: usize) -> PathBuf {
        let p = dir.path().join("disk.raw");
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn read_write_flush() {
        let dir = TempDir::new("raw-rw");
        let p = image(&dir, 1 << 20);
        let d = RawImage::open(&p, false).unwrap();
        assert_eq!(d.size(), 1 << 20);
        assert!(!d.read_only());
        assert_eq!(d.format(), "raw");
        let mut buf = vec![0u8; 1000];
        d.read_at(&mut buf, 5000).unwrap();
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((5000 + i) % 251) as u8));
        d.write_at(&[0xaa; 512], 4096).unwrap();
        d.flush().unwrap();
        d.read_at(&mut buf[..10], 4600).unwrap();
        assert_eq!(&buf[..8], &[0xaa; 8]);
        assert_eq!(buf[8], ((4608) % 251) as u8);
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(&on_disk[4096..4608], &[0xaa; 512]);
        // The last byte is readable and writable; one more is not.
        d.write_at(&[1], (1 << 20) - 1).unwrap();
        d.read_at(&mut buf[..1], (1 << 20) - 1).unwrap();
        assert_eq!(buf[0], 1);
    }

    #[test]
    fn bounds() {
        let dir = TempDir::new("raw-bounds");
        let p = image(&dir, 4096);
        let d = RawImage::open(&p, false).unwrap();
        let mut buf = [0u8; 512];
        let e = d.read_at(&mut buf, 4095).unwrap_err();
        assert!(matches!(e, DiskError::OutOfRange { .. }), "{e}");
        assert!(e.to_string().contains("disk.raw"), "{e}");
        assert!(d.write_at(&buf, 3585).is_err());
        assert!(d.read_at(&mut buf, u64::MAX - 10).is_err());
        assert!(d.discard(4000, 97).is_err());
        assert!(d.read_at(&mut [], 4096).is_ok());
    }

    #[test]
    fn read_only_refuses_writes() {
        let dir = TempDir::new("raw-ro");
        let p = image(&dir, 4096);
        let d = RawImage::open(&p, true).unwrap();
        assert!(d.read_only());
        assert!(!d.discard_supported());
        let e = d.write_at(&[1, 2, 3], 0).unwrap_err();
        assert!(matches!(e, DiskError::ReadOnly { .. }), "{e}");
        assert!(d.discard(0, 4096).is_err());
        d.flush().unwrap();
        let mut buf = [0u8; 3];
        d.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0, 1, 2]);
    }

    #[test]
    fn discard_punches_holes() {
        let dir = TempDir::new("raw-discard");
        let p = image(&dir, 1 << 20);
        let d = RawImage::open(&p, false).unwrap();
        assert!(d.discard_supported());
        let before = std::fs::metadata(&p).unwrap().blocks();
        d.discard(64 << 10, 512 << 10).unwrap();
        d.discard(0, 0).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 1 << 20, "KEEP_SIZE");
        let mut buf = vec![0xffu8; 512 << 10];
        d.read_at(&mut buf, 64 << 10).unwrap();
        // Where the file system supports hole punching, the range now reads as zeros
        // and takes no space; elsewhere discard is a no-op.
        if meta.blocks() < before {
            assert!(buf.iter().all(|&b| b == 0));
        }
        // Data outside the range is untouched.
        d.read_at(&mut buf[..16], (64 << 10) - 16).unwrap();
        assert!(buf[..16]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (((64 << 10) - 16 + i) % 251) as u8));
    }

    #[test]
    fn concurrent_writers() {
        let dir = TempDir::new("raw-threads");
        let p = image(&dir, 8 << 20);
        let d: Arc<dyn DiskImage> = Arc::new(RawImage::open(&p, false).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || {
                    for i in 0..64u64 {
                        let off = (u64::from(t) << 20) + i * 4096;
                        d.write_at(&[t + 1; 4096], off).unwrap();
                        let mut back = [0u8; 4096];
                        d.read_at(&mut back, off).unwrap();
                        assert!(back.iter().all(|&b| b == t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        d.flush().unwrap();
    }
}
