//! What stands for a vhost-user disk where xenkvm itself would read the
//! image (the built-in pygrub): nothing can be read through it; the error
//! says why.

use std::io;
use std::path::PathBuf;

use crate::disk::{DiskError, DiskImage};

/// The socket of a vhost-user disk, in the place of an opened image.
pub struct SocketDisk {
    pub path: PathBuf,
}

impl SocketDisk {
    fn refuse(&self, op: &'static str, offset: u64, len: usize) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            op,
            offset,
            len: len as u64,
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "a vhost-user disk is read by its backend only (the built-in pygrub cannot read it; \
                 give --kernel, or PV-GRUB2 as the kernel)",
            ),
        }
    }
}

impl DiskImage for SocketDisk {
    fn size(&self) -> u64 {
        0
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        Err(self.refuse("read", offset, buf.len()))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        Err(self.refuse("write", offset, buf.len()))
    }
    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        Err(self.refuse("discard", offset, len as usize))
    }
    fn discard_supported(&self) -> bool {
        false
    }
    fn format(&self) -> &'static str {
        "vhost-user"
    }
}
