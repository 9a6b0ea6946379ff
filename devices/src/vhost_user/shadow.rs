//! The bridge's own shared memory: a memfd mapped shared, given to the
//! vhost-user backend in its memory table at [`SHADOW_GPA`] (far above any
//! guest RAM). It holds the virtqueue and, per request slot, the indirect
//! descriptor table, the virtio-blk header and the status byte. The guest
//! never sees it; data descriptors point at the guest's own frames instead.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use super::VhostError;

/// Where the region sits in the backend's address space (16 TiB).
pub const SHADOW_GPA: u64 = 1 << 44;

pub struct Shadow {
    file: File,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access below is bounds
// checked and done with volatile or atomic operations.
unsafe impl Send for Shadow {}
// SAFETY: as above; users keep to disjoint parts per thread (the net link's
// two queues) or one thread.
unsafe impl Sync for Shadow {}

impl Shadow {
    pub fn new(len: usize) -> Result<Shadow, VhostError> {
        let len = len.div_ceil(4096) * 4096;
        let io = |e| VhostError::Shadow(e);
        // SAFETY: a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"xenkvm-vhost-rings".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is new and owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64).map_err(io)?;
        // SAFETY: a new shared mapping of our own file; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(Shadow {
            file,
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// This process's address of the region (for SET_VRING_ADDR and the memory table).
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    fn check(&self, off: usize, n: usize) {
        // Offsets are computed by the bridge from its own layout, never
        // taken from the guest or the backend: a miss is a bug.
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len),
            "shadow access {off:#x}+{n:#x} outside {:#x}",
            self.len
        );
    }

    pub fn write(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds (checked); shared memory is written volatile.
            unsafe { self.ptr.add(off + i).write_volatile(*b) };
        }
    }

    pub fn read(&self, off: usize, buf: &mut [u8]) {
        self.check(off, buf.len());
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in bounds (checked).
            *b = unsafe { self.ptr.add(off + i).read_volatile() };
        }
    }

    fn atomic_u16(&self, off: usize) -> &AtomicU16 {
        self.check(off, 2);
        assert!(off.is_multiple_of(2));
        // SAFETY: in bounds and aligned; lives as long as self.
        unsafe { &*(self.ptr.add(off) as *const AtomicU16) }
    }

    pub fn load_u16(&self, off: usize) -> u16 {
        self.atomic_u16(off).load(Ordering::Acquire)
    }

    pub fn store_u16(&self, off: usize, v: u16) {
        self.atomic_u16(off).store(v, Ordering::Release)
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_reads_back_and_rounds_to_pages() {
        let s = Shadow::new(100).unwrap();
        assert_eq!(s.len(), 4096);
        s.write(10, b"hello");
        let mut b = [0u8; 5];
        s.read(10, &mut b);
        assert_eq!(&b, b"hello");
        s.store_u16(4094, 0xbeef);
        assert_eq!(s.load_u16(4094), 0xbeef);
    }
}
