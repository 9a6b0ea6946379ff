//! A vhost-user disk where xenkvm itself reads the image (the built-in
//! pygrub, before the guest exists): reads go through a [`Client`]
//! connection, opened at the first read and closed by
//! [`DiskImage::release`], since backends such as qemu-storage-daemon
//! serve one connection at a time and the guest's bridge needs it next.
//! Read-only: xenkvm never writes a guest's disk itself.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use super::client::Client;
use super::VhostError;
use crate::disk::{DiskError, DiskImage};

/// The socket of a vhost-user disk, in the place of an opened image.
pub struct SocketDisk {
    pub path: PathBuf,
    size: u64,
    client: Mutex<Option<Client>>,
}

impl SocketDisk {
    /// Ask the backend at `path` for the disk's size (and that it is one).
    pub fn open(path: PathBuf) -> Result<SocketDisk, VhostError> {
        let (fe, info) = super::conn::open(&path)?;
        drop(fe);
        Ok(SocketDisk {
            path,
            size: info.capacity.saturating_mul(512),
            client: Mutex::new(None),
        })
    }

    fn err(&self, op: &'static str, offset: u64, len: usize, source: io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            op,
            offset,
            len: len as u64,
            source,
        }
    }

    fn refuse(&self, op: &'static str, offset: u64, len: usize) -> DiskError {
        let why = "xenkvm only reads a vhost-user disk itself (its backend serves the guest)";
        self.err(
            op,
            offset,
            len,
            io::Error::new(io::ErrorKind::Unsupported, why),
        )
    }
}

impl DiskImage for SocketDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let len = buf.len();
        if offset.checked_add(len as u64).is_none_or(|e| e > self.size) {
            return Err(DiskError::OutOfRange {
                path: self.path.clone(),
                op: "read",
                offset,
                len: len as u64,
                size: self.size,
            });
        }
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_none() {
            let new = Client::connect(&self.path)
                .map_err(|e| self.err("read", offset, len, io::Error::other(e.to_string())))?;
            *c = Some(new);
        }
        let r = c.as_mut().map_or(Ok(()), |cl| cl.read_at(buf, offset));
        r.map_err(|e| {
            // A connection that failed once is not reused.
            *c = None;
            self.err("read", offset, len, e)
        })
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
    fn release(&self) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
