//! Disk images (raw, qcow2) behind one synchronous interface.
//!
//! The PV block backend runs its I/O on its own threads, so every method takes
//! `&self` and may be called concurrently. [`open`] picks the format (or sniffs
//! it with [`Format::Auto`]) and returns a boxed [`DiskImage`].

mod qcow2;
mod raw;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use qcow2::Qcow2Image;
pub use raw::RawImage;

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A disk image the backend reads and writes by byte offset.
pub trait DiskImage: Send + Sync {
    /// Virtual disk size in bytes.
    fn size(&self) -> u64;
    /// Whether the image was opened read-only (writes and discards fail).
    fn read_only(&self) -> bool;
    /// Fills the whole of `buf` from `offset`, or fails. Reading past `size()` fails.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError>;
    /// Writes the whole of `buf` at `offset`, or fails (read-only image, out of range).
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError>;
    /// Makes every completed write durable on the host.
    fn flush(&self) -> Result<(), DiskError>;
    /// Tells the image that `len` bytes at `offset` are no longer needed. Best effort:
    /// the range may read back as zeros or as its old content.
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError>;
    /// Whether [`DiskImage::discard`] can free space (advertised to the guest).
    fn discard_supported(&self) -> bool;
    /// `"raw"` or `"qcow2"`.
    fn format(&self) -> &'static str;
    /// Let go of what reading it needed until the next access (a
    /// vhost-user disk's connection, which its backend serves one at a time).
    fn release(&self) {}
}

/// Image format requested by the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    /// qcow2 if the file starts with the qcow2 magic `QFI\xfb`, raw otherwise.
    Auto,
}

/// Errors from opening or accessing a disk image; each names the image.
#[derive(thiserror::Error, Debug)]
pub enum DiskError {
    #[error("disk image {path}: cannot open: {err}")]
    Open { path: PathBuf, err: io::Error },
    #[error("disk image {path}: not a valid {format} image: {source}")]
    BadImage {
        path: PathBuf,
        format: &'static str,
        source: io::Error,
    },
    #[error("disk image {path}: {op} of {len} bytes at offset {offset} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        len: u64,
        source: io::Error,
    },
    #[error(
        "disk image {path}: {op} of {len} bytes at offset {offset} is beyond the disk size {size}"
    )]
    OutOfRange {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("disk image {path}: {op} refused: the image is read-only")]
    ReadOnly { path: PathBuf, op: &'static str },
    #[error(
        "disk image {path}: the qcow2 image names {what} {target:?}; xenkvm does not open \
         files an image names (a hostile image could name any host file), and there is no \
         configuration syntax to name a backing chain or data file: convert the image to a \
         self-contained one (`qemu-img convert -O qcow2 IMAGE FLAT.qcow2`) if you trust it"
    )]
    ImplicitFile {
        path: PathBuf,
        /// `"a backing file"` or `"an external data file"`.
        what: &'static str,
        target: String,
    },
    #[error("disk image {path}: flush failed: {source}")]
    Flush { path: PathBuf, source: io::Error },
}

/// Opens `path` as `format` (sniffing it for [`Format::Auto`]), read-only or read-write.
pub fn open(path: &Path, format: Format, read_only: bool) -> Result<Box<dyn DiskImage>, DiskError> {
    let format = match format {
        Format::Auto => sniff(path)?,
        f => f,
    };
    log::debug!(
        "disk: opening {} as {:?}{}",
        path.display(),
        format,
        if read_only { " (read-only)" } else { "" }
    );
    Ok(match format {
        Format::Qcow2 => Box::new(Qcow2Image::open(path, read_only)?),
        _ => Box::new(RawImage::open(path, read_only)?),
    })
}

/// Format of the file at `path` judged by its first bytes: qcow2 or raw.
fn sniff(path: &Path) -> Result<Format, DiskError> {
    let open_err = |err| DiskError::Open {
        path: path.to_path_buf(),
        err,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(open_err(e)),
        }
    }
    Ok(if got == magic.len() && magic == QCOW2_MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// Checks that `[offset, offset + len)` lies within `size`.
fn check_range(
    path: &Path,
    op: &'static str,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<(), DiskError> {
    if offset <= size && len <= size - offset {
        Ok(())
    } else {
        Err(DiskError::OutOfRange {
            path: path.to_path_buf(),
            op,
            offset,
            len,
            size,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scratch directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xenkvm-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Whether `tool` runs; if not, the test may skip unless CI is set.
    pub fn have_tool(tool: &str, test: &str) -> bool {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !ok {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {tool} is required (CI is set)");
            }
            eprintln!("SKIP {test}: {tool} not found");
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::TempDir;
    use super::*;

    #[test]
    fn sniffs_qcow2_magic_and_short_files() {
        let dir = TempDir::new("sniff");
        let q = dir.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03rest").unwrap();
        assert_eq!(sniff(&q).unwrap(), Format::Qcow2);
        let r = dir.path().join("r");
        std::fs::write(&r, b"QF").unwrap();
        assert_eq!(sniff(&r).unwrap(), Format::Raw);
        let e = sniff(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn open_auto_raw() {
        let dir = TempDir::new("auto");
        let p = dir.path().join("disk.raw");
        std::fs::write(&p, vec![7u8; 4096]).unwrap();
        let d = open(&p, Format::Auto, true).unwrap();
        assert_eq!(d.format(), "raw");
        assert_eq!(d.size(), 4096);
        assert!(d.read_only());
    }

    #[test]
    fn range_check_never_overflows() {
        let p = Path::new("x");
        assert!(check_range(p, "read", 0, 10, 10).is_ok());
        assert!(check_range(p, "read", 10, 0, 10).is_ok());
        assert!(check_range(p, "read", 11, 0, 10).is_err());
        assert!(check_range(p, "read", 5, 6, 10).is_err());
        assert!(check_range(p, "read", u64::MAX, u64::MAX, 10).is_err());
    }
}
