//! qcow2 images through the `imago` crate (its synchronous build).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Storage, StorageOpenOptions};

use super::{check_range, DiskError, DiskImage};

/// A qcow2 image (v2 or v3), self-contained: no backing file, no external data file.
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
    /// Opens `path` as qcow2.
    ///
    /// The image is opened on its own: an image whose header names a backing file or an
    /// external data file is refused ([`DiskError::ImplicitFile`]). The header is
    /// untrusted data, and following it would open any host file the monitor can reach
    /// (backing files for reading, data files read-write).
    pub fn open(path: &Path, read_only: bool) -> Result<Qcow2Image, DiskError> {
        // Checked read-only first: a writable open already modifies the header (imago
        // clears its auto-clear bits), and an image we refuse is left as it was.
        let mut qcow2 = open_self_contained(path, false)?;
        if !read_only {
            qcow2 = open_self_contained(path, true)?;
        }
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

/// Opens the qcow2 image at `path` and nothing else, or fails: a missing or unreadable
/// file, a bad image, or a header naming a backing file or an external data file.
fn open_self_contained(path: &Path, write: bool) -> Result<Qcow2<File>, DiskError> {
    // Opened here, explicitly, so that nothing at all has to pass the gate below.
    let file =
        File::open(StorageOpenOptions::new().filename(path).write(write)).map_err(|err| {
            DiskError::Open {
                path: path.to_path_buf(),
                err,
            }
        })?;
    // `backing(None)` and `data_file(None)` override whatever the header names, and the
    // deny gate refuses any other file imago might want to open on its own.
    let qcow2 = Qcow2::<File>::builder(file)
        .write(write)
        .backing(None)
        .data_file(None)
        .open(DenyImplicitOpenGate::default())
        .map_err(|source| DiskError::BadImage {
            path: path.to_path_buf(),
            format: "qcow2",
            source,
        })?;
    let implicit = |what, target: Option<&String>| DiskError::ImplicitFile {
        path: path.to_path_buf(),
        what,
        target: target.map_or_else(|| "(no name)".to_string(), String::clone),
    };
    if qcow2.requires_external_data_file() {
        return Err(implicit(
            "an external data file",
            qcow2.implicit_external_data_file(),
        ));
    }
    if let Some(backing) = qcow2.implicit_backing_file() {
        return Err(implicit("a backing file", Some(backing)));
    }
    Ok(qcow2)
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

    /// A hostile image naming a host file as its backing file must not be opened:
    /// before the fix, imago's permissive gate opened it and the guest read the file.
    #[test]
    fn backing_file_named_by_image_is_refused() {
        if !have_tool("qemu-img", "qcow2::backing_file_named_by_image_is_refused") {
            return;
        }
        let dir = TempDir::new("qcow2-backing");
        let secret = dir.path().join("host-secret");
        let mut content = b"host secret: not for the guest\n".to_vec();
        content.resize(4096, b'#');
        std::fs::write(&secret, &content).unwrap();
        let q = dir.path().join("hostile.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            secret.to_str().unwrap(),
            "-F",
            "raw",
            q.to_str().unwrap(),
            "1M",
        ]);
        for read_only in [true, false] {
            match open(&q, Format::Auto, read_only) {
                Ok(d) => {
                    let mut buf = vec![0u8; 64];
                    let r = d.read_at(&mut buf, 0);
                    panic!(
                        "hostile image opened (ro={read_only}); guest reads {:?} ({r:?})",
                        String::from_utf8_lossy(&buf)
                    );
                }
                Err(e) => {
                    assert!(matches!(e, DiskError::ImplicitFile { .. }), "{e}");
                    let msg = e.to_string();
                    assert!(msg.contains("backing file"), "{msg}");
                    assert!(msg.contains("host-secret"), "{msg}");
                    assert!(msg.contains("hostile.qcow2"), "{msg}");
                }
            }
        }
    }

    /// A hostile image naming a host file as its external data file must not be
    /// opened: before the fix imago opened it read-write, even for a read-only disk.
    #[test]
    fn external_data_file_named_by_image_is_refused() {
        if !have_tool(
            "qemu-img",
            "qcow2::external_data_file_named_by_image_is_refused",
        ) {
            return;
        }
        let dir = TempDir::new("qcow2-datafile");
        let victim = dir.path().join("host-victim");
        let q = dir.path().join("hostile.qcow2");
        let opt = format!("data_file={},data_file_raw=on", victim.display());
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &opt,
            q.to_str().unwrap(),
            "1M",
        ]);
        // The host file the image names, with content of its own.
        let content = vec![0x5au8; 1 << 20];
        std::fs::write(&victim, &content).unwrap();
        let image = std::fs::read(&q).unwrap();
        for read_only in [true, false] {
            match open(&q, Format::Qcow2, read_only) {
                Ok(d) => {
                    let mut buf = vec![0u8; 16];
                    let r = d.read_at(&mut buf, 0);
                    panic!("hostile image opened (ro={read_only}); reads {buf:02x?} ({r:?})");
                }
                Err(e) => {
                    assert!(matches!(e, DiskError::ImplicitFile { .. }), "{e}");
                    let msg = e.to_string();
                    assert!(msg.contains("external data file"), "{msg}");
                    assert!(msg.contains("host-victim"), "{msg}");
                }
            }
        }
        assert!(
            std::fs::read(&victim).unwrap() == content,
            "data file changed"
        );
        // A refused image is left as it was (a writable open clears auto-clear bits).
        assert!(std::fs::read(&q).unwrap() == image, "refused image changed");
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
