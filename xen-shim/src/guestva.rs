//! Guest-virtual address translation by a software walk of the guest's
//! page tables, and copying hypercall arguments ("guest handles").

use crate::abi::pte;
use crate::mem::GuestMem;

/// Why a guest-virtual access failed: the page-fault error code Xen would
/// report (bit 0 present, bit 1 write, bit 2 user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub va: u64,
    pub error_code: u32,
}

/// Result of a successful walk: the leaf entry's address and the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    pub gpa: u64,
    /// Guest-physical address of the L1 entry that maps `va`.
    pub l1e_addr: u64,
    pub l1e: u64,
}

fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1ffff
}

/// Walk the 4-level tables rooted at `root_mfn` for `va`.
/// `write`/`user` select the access rights checked at every level.
pub fn walk(
    mem: &dyn GuestMem,
    root_mfn: u64,
    va: u64,
    write: bool,
    user: bool,
) -> Result<Walk, Fault> {
    let wbit = if write { 2 } else { 0 };
    let ubit = if user { 4 } else { 0 };
    let fault = |present: bool| Fault {
        va,
        error_code: (present as u32) | wbit | ubit,
    };
    if !canonical(va) {
        return Err(fault(false));
    }
    let mut table = root_mfn << 12;
    for level in (1..=4u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 511;
        let addr = table + idx * 8;
        let e = mem.read_u64(addr).map_err(|_| fault(false))?;
        if e & pte::P == 0 {
            return Err(fault(false));
        }
        if (write && e & pte::RW == 0) || (user && e & pte::US == 0) {
            return Err(fault(true));
        }
        if level > 1 && e & pte::PSE != 0 {
            // Guest superpages are refused by validation; monitor areas may use them.
            let size_shift = 12 + 9 * (level - 1);
            let base = e & pte::ADDR_MASK & !((1u64 << size_shift) - 1);
            return Ok(Walk {
                gpa: base + (va & ((1 << size_shift) - 1)),
                l1e_addr: addr,
                l1e: e,
            });
        }
        if level == 1 {
            return Ok(Walk {
                gpa: (e & pte::ADDR_MASK) + (va & 0xfff),
                l1e_addr: addr,
                l1e: e,
            });
        }
        table = e & pte::ADDR_MASK;
    }
    Err(fault(false))
}

/// The address of a field `off` bytes into a guest structure at `base`:
/// -EFAULT when it wraps around the address space (a handle near the top
/// of it), as Xen's copy of the whole structure would fail.
pub fn field(base: u64, off: u64) -> Result<u64, i64> {
    base.checked_add(off).ok_or(-crate::abi::errno::EFAULT)
}

/// Whether `len` bytes at guest-virtual `va` form a range a guest may name
/// (canonical, no wrap, outside the hypervisor hole): Xen's `__addr_ok`
/// over a whole range, for tables the monitor reads later (the LDT).
pub fn range_ok(va: u64, len: u64) -> bool {
    usize::try_from(len).is_ok_and(|len| access_ok(va, len, false).is_ok())
}

/// Guest handles may not point into the hypervisor hole (the monitor's own
/// mappings live there) nor wrap around: Xen's access_ok.
fn access_ok(va: u64, len: usize, write: bool) -> Result<(), Fault> {
    let end = va.checked_add(len as u64);
    let bad = match end {
        None => true,
        Some(end) => {
            len > 0
                && (va < crate::abi::HYPERVISOR_VIRT_END && end > crate::abi::HYPERVISOR_VIRT_START
                    || !canonical(va)
                    || !canonical(end - 1))
        }
    };
    if bad {
        return Err(Fault {
            va,
            error_code: if write { 2 } else { 0 },
        });
    }
    Ok(())
}

/// Copy `buf.len()` bytes from guest-virtual `va` (page by page).
pub fn copy_from(mem: &dyn GuestMem, root_mfn: u64, va: u64, buf: &mut [u8]) -> Result<(), Fault> {
    access_ok(va, buf.len(), false)?;
    let mut done = 0usize;
    while done < buf.len() {
        let cur = va.wrapping_add(done as u64);
        let chunk = ((4096 - (cur & 0xfff)) as usize).min(buf.len() - done);
        let w = walk(mem, root_mfn, cur, false, false)?;
        mem.read(w.gpa, &mut buf[done..done + chunk])
            .map_err(|_| Fault {
                va: cur,
                error_code: 1,
            })?;
        done += chunk;
    }
    Ok(())
}

/// Copy `data` to guest-virtual `va`, checking that every page is writable.
pub fn copy_to(mem: &dyn GuestMem, root_mfn: u64, va: u64, data: &[u8]) -> Result<(), Fault> {
    access_ok(va, data.len(), true)?;
    let mut done = 0usize;
    while done < data.len() {
        let cur = va.wrapping_add(done as u64);
        let chunk = ((4096 - (cur & 0xfff)) as usize).min(data.len() - done);
        let w = walk(mem, root_mfn, cur, true, false)?;
        mem.write(w.gpa, &data[done..done + chunk])
            .map_err(|_| Fault {
                va: cur,
                error_code: 3,
            })?;
        done += chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;

    #[test]
    fn walk_and_copy() {
        let m = VecMem::new(16 * 4096);
        // va 0x400000 + x -> frame 8
        m.write_u64(0x1000, 0x2000 | 7).unwrap();
        m.write_u64(0x2000, 0x3000 | 7).unwrap();
        m.write_u64(0x3000 + 2 * 8, 0x4000 | 7).unwrap();
        m.write_u64(0x4000, 0x8000 | 5).unwrap(); // read-only
        let w = walk(&m, 1, 0x400010, false, true).unwrap();
        assert_eq!(w.gpa, 0x8010);
        assert_eq!(w.l1e_addr, 0x4000);
        let e = walk(&m, 1, 0x400010, true, false).unwrap_err();
        assert_eq!(e.error_code, 3);
        assert_eq!(
            walk(&m, 1, 0x401000, false, false).unwrap_err().error_code,
            0
        );
        assert!(walk(&m, 1, 0x0000_8000_0000_0000, false, false).is_err());
        m.write(0x8ff0, b"0123456789abcdef").unwrap();
        let mut b = [0u8; 4];
        copy_from(&m, 1, 0x400ff4, &mut b).unwrap();
        assert_eq!(&b, b"4567");
        assert!(copy_to(&m, 1, 0x400000, b"x").is_err());
    }
}
