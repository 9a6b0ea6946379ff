//! qcow2 images through the `imago` crate (its synchronous build).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};

use super::{check_range, DiskError, DiskImage};

/// A qcow2 image (v2 or v3, with its backing chain if the header names one).
///
/// Reads and writes share the lock; a discard takes it exclusively because it may
/// invalidate the cluster mappings concurrent requests hold.
pub struct Qcow2Image {
    access: RwLock<FormatAccess<File>>,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl Qcow2Image {
    /// Opens `path` as qcow2. Backing files named in its header are opened read-only.
    pub fn open(path: &Path, read_only: bool) -> Result<Qcow2Image, DiskError> {
        // Report a missing or inaccessible file as such, not as a bad image.
        OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|err| DiskError::Open {
                path: path.to_path_buf(),
                err,
            })?;
        let qcow2 = Qcow2::<File>::builder_path(path)
            .write(!read_only)
            .open(PermissiveImplicitOpenGate::default())
            .map_err(|source| DiskError::BadImage {
                path: path.to_path_buf(),
                format: "qcow2",
                source,
            })?;
        let access = FormatAccess::new(qcow2);
        let size = access.size();
        Ok(Qcow2Image {
            access: RwLock::new(access),
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    fn io_err(&self, op: &'static str, offset: u64, len: u64, source: io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            op,
            offset,
            len,
            source,
        }
    }

    fn read_only_err(&self, op: &'static str) -> DiskError {
        DiskError::ReadOnly {
            path: self.path.clone(),
            op,
        }
    }
}

impl DiskImage for Qcow2Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let len = buf.len() as u64;
        check_range(&self.path, "read", offset, len, self.size)?;
        let access = self.access.read().unwrap_or_else(|p| p.into_inner());
        access
            .read(buf, offset)
            .map_err(|e| self.io_err("read", offset, len, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        if self.read_only {
            return Err(self.read_only_err("write"));
        }
        let len = buf.len() as u64;
        check_range(&self.path, "write", offset, len, self.size)?;
        let access = self.access.read().unwrap_or_else(|p| p.into_inner());
        access
            .write(buf, offset)
            .map_err(|e| self.io_err("write", offset, len, e))
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        let access = self.access.read().unwrap_or_else(|p| p.into_inner());
        access
            .flush()
            .and_then(|()| access.sync())
            .map_err(|source| DiskError::Flush {
                path: self.path.clone(),
                source,
            })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        if self.read_only {
            return Err(self.read_only_err("discard"));
        }
        check_range(&self.path, "discard", offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        let mut access = self.access.write().unwrap_or_else(|p| p.into_inner());
        match access.discard_to_any(offset, len) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                log::debug!("disk {}: discard unsupported: {e}", self.path.display());
                Ok(())
            }
            Err(e) => Err(self.io_err("discard", offset, len, e)),
        }
    }

    fn discard_supported(&self) -> bool {
        !self.read_only
    }

    fn format(&self) -> &'static str {
        "qcow2"
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{have_tool, TempDir};
    use super::super::{open, Format};
    use super::*;
    use std::process::Command;
    use std::sync::Arc;

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn write_through_api_verify_with_qemu_img() {
        if !have_tool("qemu-img", "qcow2::write_through_api_verify_with_qemu_img") {
            return;
        }
        let dir = TempDir::new("qcow2");
        let q = dir.path().join("disk.qcow2");
        let size: u64 = 16 << 20;
        qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "16M"]);

        let d = open(&q, Format::Auto, false).unwrap();
        assert_eq!(d.format(), "qcow2");
        assert_eq!(d.size(), size);
        assert!(!d.read_only());
        // Unallocated clusters read as zeros.
        let mut buf = vec![0xffu8; 8192];
        d.read_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));

        // Our model of the disk, updated with every write.
        let mut model = vec![0u8; size as usize];
        let mut put = |d: &dyn DiskImage, data: &[u8], off: u64| {
            d.write_at(data, off).unwrap();
            model[off as usize..off as usize + data.len()].copy_from_slice(data);
        };
        put(&*d, &pattern(1, 512), 0);
        put(&*d, &pattern(2, 100_000), 65536 - 3000); // unaligned, across clusters
        put(&*d, &pattern(3, 4096), size - 4096); // the last sector
        put(&*d, &pattern(4, 1 << 20), 5 << 20);
        put(&*d, &pattern(5, 777), (5 << 20) + 12345); // overwrite inside
        assert!(d.write_at(&[0; 512], size - 511).is_err());
        assert!(d.read_at(&mut [0; 2], size - 1).is_err());
        d.flush().unwrap();

        // Read back through the API, then through qemu-img.
        let mut back = vec![0u8; size as usize];
        d.read_at(&mut back, 0).unwrap();
        assert!(back == model, "read-back differs");
        drop(d);
        let raw = dir.path().join("out.raw");
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            q.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]);
        let converted = std::fs::read(&raw).unwrap();
        assert_eq!(converted.len(), model.len());
        assert!(converted == model, "qemu-img sees different content");
        qemu_img(&["check", "-q", q.to_str().unwrap()]);

        // Discard keeps the image consistent and leaves other data alone.
        let d = Qcow2Image::open(&q, false).unwrap();
        d.discard(5 << 20, 1 << 20).unwrap();
        let mut head = [0u8; 512];
        d.read_at(&mut head, 0).unwrap();
        assert_eq!(&head[..], &model[..512]);
        d.flush().unwrap();
        drop(d);
        qemu_img(&["check", "-q", q.to_str().unwrap()]);

        // Read-only open refuses writes but reads the data.
        let d = open(&q, Format::Qcow2, true).unwrap();
        assert!(d.read_only());
        assert!(matches!(
            d.write_at(&[1], 0).unwrap_err(),
            DiskError::ReadOnly { .. }
        ));
        d.read_at(&mut head, 0).unwrap();
        assert_eq!(&head[..], &model[..512]);
    }

    #[test]
    fn concurrent_io() {
        if !have_tool("qemu-img", "qcow2::concurrent_io") {
            return;
        }
        let dir = TempDir::new("qcow2-mt");
        let q = dir.path().join("disk.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "8M"]);
        let d: Arc<dyn DiskImage> = Arc::new(Qcow2Image::open(&q, false).unwrap());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || {
                    for i in 0..32u64 {
                        let off = (u64::from(t) << 21) + i * 65536 + 512;
                        let data = pattern(t.wrapping_add(i as u8), 4096);
                        d.write_at(&data, off).unwrap();
                        if i % 8 == 0 {
                            d.discard(off + 65536, 65536).unwrap();
                        }
                        let mut back = vec![0u8; 4096];
                        d.read_at(&mut back, off).unwrap();
                        assert_eq!(back, data);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        d.flush().unwrap();
        drop(d);
        qemu_img(&["check", "-q", q.to_str().unwrap()]);
    }

    #[test]
    fn garbage_is_not_qcow2() {
        let dir = TempDir::new("qcow2-bad");
        let p = dir.path().join("bad.qcow2");
        let mut junk = b"QFI\xfb".to_vec();
        junk.extend_from_slice(&[0xff; 1020]);
        std::fs::write(&p, &junk).unwrap();
        let e = open(&p, Format::Auto, true).err().expect("must fail");
        assert!(matches!(e, DiskError::BadImage { .. }), "{e}");
        assert!(e.to_string().contains("bad.qcow2"), "{e}");
    }
}
