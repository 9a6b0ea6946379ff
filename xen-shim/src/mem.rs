//! Guest-memory abstraction used by every Xen subsystem.
//!
//! The Xen core never sees KVM: it reads and writes guest-physical memory
//! through [`GuestMem`], which the monitor implements over its vm-memory
//! mapping and which tests implement with [`VecMem`].

use thiserror::Error;

/// A guest-physical access outside guest memory.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("guest-physical access {gpa:#x}+{len:#x} is outside guest memory")]
pub struct MemError {
    pub gpa: u64,
    pub len: usize,
}

/// Byte access to guest-physical memory. Implementations must refuse (never
/// panic on) any range that is not fully backed.
pub trait GuestMem: Send + Sync {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError>;

    /// Give the backing of `len` bytes at `gpa` (page-aligned) back to the
    /// host: they read as zeros afterwards. The default writes zeros.
    fn discard(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        let zeros = [0u8; 4096];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(4096);
            self.write(
                gpa.checked_add(at).ok_or(MemError { gpa, len: 0 })?,
                &zeros[..n as usize],
            )?;
            at += n;
        }
        Ok(())
    }

    fn read_u8(&self, gpa: u64) -> Result<u8, MemError> {
        let mut b = [0u8; 1];
        self.read(gpa, &mut b)?;
        Ok(b[0])
    }
    fn read_u16(&self, gpa: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u8(&self, gpa: u64, v: u8) -> Result<(), MemError> {
        self.write(gpa, &[v])
    }
    fn write_u16(&self, gpa: u64, v: u16) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    fn write_u32(&self, gpa: u64, v: u32) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    fn write_u64(&self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    /// Atomic OR of an aligned u64 (the guest updates the same words
    /// concurrently); returns the previous value. The default is not atomic.
    fn fetch_or_u64(&self, gpa: u64, v: u64) -> Result<u64, MemError> {
        let old = self.read_u64(gpa)?;
        self.write_u64(gpa, old | v)?;
        Ok(old)
    }
    /// Atomic compare-and-exchange of an aligned u64: Ok(old) when it held
    /// `current` and now holds `new`, Err(actual) otherwise. The default is
    /// not atomic.
    fn compare_exchange_u64(
        &self,
        gpa: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        let old = self.read_u64(gpa)?;
        if old != current {
            return Ok(Err(old));
        }
        self.write_u64(gpa, new)?;
        Ok(Ok(old))
    }
    /// Atomic AND of an aligned u64; returns the previous value.
    fn fetch_and_u64(&self, gpa: u64, v: u64) -> Result<u64, MemError> {
        let old = self.read_u64(gpa)?;
        self.write_u64(gpa, old & v)?;
        Ok(old)
    }
}

/// Plain vector-backed guest memory starting at guest-physical 0, for tests.
pub struct VecMem {
    bytes: std::sync::Mutex<Vec<u8>>,
}

impl VecMem {
    pub fn new(size: usize) -> Self {
        VecMem {
            bytes: std::sync::Mutex::new(vec![0; size]),
        }
    }

    fn range(
        &self,
        len_total: usize,
        gpa: u64,
        len: usize,
    ) -> Result<std::ops::Range<usize>, MemError> {
        let err = MemError { gpa, len };
        let start = usize::try_from(gpa).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > len_total {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl GuestMem for VecMem {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.range(bytes.len(), gpa, buf.len())?;
        buf.copy_from_slice(&bytes[r]);
        Ok(())
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.range(bytes.len(), gpa, data.len())?;
        bytes[r].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vecmem_bounds() {
        let m = VecMem::new(4096);
        m.write_u64(8, 0x1122).unwrap();
        assert_eq!(m.read_u64(8).unwrap(), 0x1122);
        assert!(m.read_u64(4092).is_err());
        assert!(m.write_u8(u64::MAX, 1).is_err());
    }
}
