//! Guest memory: one mapping for RAM and the monitor area, exposed to the
//! Xen core through `xen_shim::mem::GuestMem`. It is anonymous and private,
//! or, when a vhost-user backend must see the guest's RAM, a memfd mapped
//! shared (`Memory::new_shared`), whose descriptor goes to the backend.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use xen_shim::mem::{GuestMem, MemError};

pub struct Memory {
    pub mmap: GuestMemoryMmap,
    pub size: u64,
    /// The memfd behind a shared mapping.
    shared: Option<Arc<File>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {0} MiB of guest memory: {1}")]
    Alloc(u64, String),
}

/// The least memory a PV guest boots with, MiB.
pub const MIN_GUEST_MIB: u64 = 64;

/// The host's memory (MemTotal in /proc/meminfo), MiB.
pub fn host_total_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib >> 10)
}

/// What this host and monitor can run, for checking xl.cfg files.
pub fn limits() -> api::xlcfg::Limits {
    api::xlcfg::Limits {
        max_vcpus: crate::layout::MAX_VCPUS,
        min_memory_mib: MIN_GUEST_MIB,
        host_memory_mib: host_total_mib().unwrap_or(u64::MAX),
    }
}

impl Memory {
    pub fn new(size: u64) -> Result<Memory, MemoryError> {
        let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)])
            .map_err(|e| MemoryError::Alloc(size >> 20, e.to_string()))?;
        Ok(Memory {
            mmap,
            size,
            shared: None,
        })
    }

    /// Memory in a memfd of `size` bytes, mapped shared, so that another
    /// process (a vhost-user backend) can map the guest's RAM too. Pages
    /// are allocated on first touch, as with the anonymous mapping.
    pub fn new_shared(size: u64) -> Result<Memory, MemoryError> {
        let err = |e: std::io::Error| MemoryError::Alloc(size >> 20, e.to_string());
        // SAFETY: a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"xenkvm-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(err)?;
        let file = Arc::new(file);
        let mmap = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            size as usize,
            Some(FileOffset::from_arc(file.clone(), 0)),
        )])
        .map_err(|e| MemoryError::Alloc(size >> 20, e.to_string()))?;
        Ok(Memory {
            mmap,
            size,
            shared: Some(file),
        })
    }

    /// The memfd behind the guest's memory, when it is shared.
    pub fn shared_file(&self) -> Option<&Arc<File>> {
        self.shared.as_ref()
    }

    /// Host address of guest-physical 0 (one region).
    pub fn host_base(&self) -> *mut u8 {
        self.mmap
            .iter()
            .next()
            .map(|r| r.as_ptr())
            .unwrap_or(std::ptr::null_mut())
    }

    fn atomic(&self, gpa: u64) -> Result<&AtomicU64, MemError> {
        if !gpa.is_multiple_of(8) || gpa.checked_add(8).is_none_or(|e| e > self.size) {
            return Err(MemError { gpa, len: 8 });
        }
        // SAFETY: in bounds, 8-aligned, and the mapping lives as long as self.
        Ok(unsafe { &*(self.host_base().add(gpa as usize) as *const AtomicU64) })
    }
}

impl GuestMem for Memory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mmap
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| MemError {
                gpa,
                len: buf.len(),
            })
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.mmap
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| MemError {
                gpa,
                len: data.len(),
            })
    }
    /// Frames handed back by the guest (XENMEM_decrease_reservation): the
    /// host takes the pages back; the mapping reads zeros after. A shared
    /// mapping's pages belong to its memfd, which MADV_DONTNEED would not
    /// free: the range is punched out of the file instead.
    fn discard(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        let bad = MemError {
            gpa,
            len: len as usize,
        };
        if !gpa.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            return Err(bad);
        }
        if gpa.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(bad);
        }
        if let Some(f) = &self.shared {
            // SAFETY: plain system call on our own memfd, range checked.
            let rc = unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    gpa as libc::off_t,
                    len as libc::off_t,
                )
            };
            return if rc == 0 { Ok(()) } else { Err(bad) };
        }
        // SAFETY: the range is inside our private anonymous mapping;
        // MADV_DONTNEED only replaces its pages with zero pages.
        let rc = unsafe {
            libc::madvise(
                self.host_base().add(gpa as usize).cast(),
                len as usize,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(bad);
        }
        Ok(())
    }
    fn fetch_or_u64(&self, gpa: u64, v: u64) -> Result<u64, MemError> {
        Ok(self.atomic(gpa)?.fetch_or(v, Ordering::SeqCst))
    }
    fn fetch_and_u64(&self, gpa: u64, v: u64) -> Result<u64, MemError> {
        Ok(self.atomic(gpa)?.fetch_and(v, Ordering::SeqCst))
    }
    fn compare_exchange_u64(
        &self,
        gpa: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        Ok(self
            .atomic(gpa)?
            .compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst))
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn mem_total_in_mib() {
        let text = "MemFree:  100 kB\nMemTotal:       24576000 kB\n";
        assert_eq!(parse_mem_total(text), Some(24000));
        assert_eq!(parse_mem_total("nothing"), None);
        assert!(host_total_mib().is_some_and(|m| m > 0));
    }

    #[test]
    fn shared_memory_gives_discarded_pages_back_as_zeros() {
        let m = Memory::new_shared(1 << 20).unwrap();
        assert!(m.shared_file().is_some());
        m.write(8192, &[0xab; 4096]).unwrap();
        let f = m.shared_file().unwrap();
        let blocks = |f: &File| {
            use std::os::unix::fs::MetadataExt;
            f.metadata().unwrap().blocks()
        };
        assert!(blocks(f) >= 8, "the page is in the memfd");
        m.discard(8192, 4096).unwrap();
        assert_eq!(blocks(f), 0, "the page left the memfd");
        let mut b = [1u8; 16];
        m.read(8192, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
        assert!(m.discard(8191, 4096).is_err());
        assert!(m.discard(1 << 20, 4096).is_err());
    }
}
