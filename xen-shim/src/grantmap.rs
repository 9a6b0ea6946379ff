//! The backend side of grant tables (v1): the monitor's backends "map" the
//! pages a guest granted to domain 0, with Xen's checks and the in-use
//! flags Xen maintains in the guest's grant entries.
//!
//! A backend runs in the monitor, which can reach all of guest memory, so a
//! mapping is a checked guest-physical address plus pin counts. The checks
//! are what keep a guest from turning a backend against itself: the entry
//! must permit access to domain 0, a write mapping needs a writable entry,
//! the frame must be the guest's RAM, and a frame mapped for writing holds a
//! "writable" page-type reference so that it cannot be (or become) a page
//! table while the backend writes to it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::Domain;
use crate::gnttab::ENTRY_SIZE;
use crate::mmu::PageType;

pub const GTF_TYPE_MASK: u16 = 3;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;

/// The domain id of the monitor's backends.
pub const BACKEND_DOMID: u16 = 0;

/// Why a grant cannot be mapped; [`GrantError::status`] is the GNTST code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant reference {0} is outside the grant table")]
    BadRef(u32),
    #[error("grant reference {0} does not grant {1} access to domain 0")]
    NotGranted(u32, &'static str),
    #[error(
        "grant reference {0} names frame {1:#x}, which is not the guest's RAM or is a page table"
    )]
    BadPage(u32, u64),
    #[error("grant reference {0} keeps changing under the backend")]
    Unstable(u32),
}

impl GrantError {
    pub fn status(&self) -> i16 {
        match self {
            GrantError::BadRef(_) => -3,   // GNTST_bad_gntref
            GrantError::BadPage(..) => -9, // GNTST_bad_page
            _ => -1,                       // GNTST_general_error
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Active {
    frame: u64,
    readers: u32,
    writers: u32,
}

/// Grant entries currently mapped by backends, with their pin counts.
#[derive(Default)]
pub struct ActiveGrants {
    entries: HashMap<u32, Active>,
}

impl ActiveGrants {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Domain {
    fn entry_gpa(&self, gref: u32) -> Result<u64, GrantError> {
        let off = u64::from(gref) * ENTRY_SIZE;
        if off + ENTRY_SIZE > u64::from(self.layout.grant_frames) * 4096 {
            return Err(GrantError::BadRef(gref));
        }
        Ok(self.layout.grant_gpa + off)
    }

    /// Set the in-use flags on grant `gref` after Xen's checks; returns the
    /// granted frame. Retries a few times if the guest changes the entry.
    fn pin_entry(&self, gref: u32, write: bool, already: bool) -> Result<u64, GrantError> {
        let gpa = self.entry_gpa(gref)?;
        let what = if write { "write" } else { "read" };
        let mem = &*self.mem;
        for _ in 0..4 {
            let cur = mem.read_u64(gpa).map_err(|_| GrantError::BadRef(gref))?;
            let flags = cur as u16;
            let domid = (cur >> 16) as u16;
            if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS
                || domid != BACKEND_DOMID
                || (write && flags & GTF_READONLY != 0)
            {
                return Err(GrantError::NotGranted(gref, what));
            }
            let mut set = GTF_READING;
            if write {
                set |= GTF_WRITING;
            }
            if already && flags & set == set {
                return Ok(cur >> 32);
            }
            match mem.compare_exchange_u64(gpa, cur, cur | u64::from(set)) {
                Ok(Ok(_)) => return Ok(cur >> 32),
                Ok(Err(_)) => continue,
                Err(_) => return Err(GrantError::BadRef(gref)),
            }
        }
        Err(GrantError::Unstable(gref))
    }

    fn clear_flags(&self, gref: u32, flags: u16) {
        if let Ok(gpa) = self.entry_gpa(gref) {
            let _ = self.mem.fetch_and_u64(gpa, !u64::from(flags));
        }
    }

    /// Map grant `gref` of this domain for a backend in domain 0; returns
    /// the guest-physical address of the granted page.
    pub fn grant_map(&self, gref: u32, write: bool) -> Result<u64, GrantError> {
        let mut active = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let existing = active.entries.get(&gref).copied();
        let first_write = write && existing.is_none_or(|a| a.writers == 0);
        let frame = match existing {
            None => self.pin_entry(gref, write, false)?,
            Some(a) if first_write => {
                self.pin_entry(gref, true, true)?;
                a.frame
            }
            Some(a) => a.frame,
        };
        if existing.is_none() || first_write {
            let ok = {
                let mut mmu = self.mmu.lock().unwrap_or_else(|e| e.into_inner());
                if !mmu.is_ram(frame) {
                    false
                } else if write {
                    let mut log = Vec::new();
                    mmu.get_type(&*self.mem, &mut log, frame, PageType::Writable)
                        .is_ok()
                } else {
                    true
                }
            };
            if !ok {
                match existing {
                    None => self.clear_flags(gref, GTF_READING | GTF_WRITING),
                    Some(_) => self.clear_flags(gref, GTF_WRITING),
                }
                return Err(GrantError::BadPage(gref, frame));
            }
        }
        let a = active.entries.entry(gref).or_insert(Active {
            frame,
            readers: 0,
            writers: 0,
        });
        if write {
            a.writers += 1;
        } else {
            a.readers += 1;
        }
        Ok(frame << 12)
    }

    /// Drop one mapping made by [`Domain::grant_map`] with the same `write`.
    pub fn grant_unmap(&self, gref: u32, write: bool) {
        let mut active = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let Some(a) = active.entries.get_mut(&gref) else {
            return;
        };
        if write {
            if a.writers == 0 {
                return;
            }
            a.writers -= 1;
            if a.writers == 0 {
                let mut mmu = self.mmu.lock().unwrap_or_else(|e| e.into_inner());
                mmu.put_type(&*self.mem, a.frame);
                drop(mmu);
                self.clear_flags(gref, GTF_WRITING);
            }
        } else {
            if a.readers == 0 {
                return;
            }
            a.readers -= 1;
        }
        if a.readers == 0 && a.writers == 0 {
            active.entries.remove(&gref);
            self.clear_flags(gref, GTF_READING | GTF_WRITING);
        }
    }

    /// Map `gref` for as long as the returned value lives.
    pub fn map_grant(self: &Arc<Self>, gref: u32, write: bool) -> Result<Mapping, GrantError> {
        let gpa = self.grant_map(gref, write)?;
        Ok(Mapping {
            dom: self.clone(),
            gref,
            write,
            gpa,
        })
    }
}

/// A mapped grant; unmapped when dropped.
pub struct Mapping {
    dom: Arc<Domain>,
    gref: u32,
    write: bool,
    gpa: u64,
}

impl Mapping {
    /// Guest-physical address of the granted page.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    pub fn gref(&self) -> u32 {
        self.gref
    }
    pub fn writable(&self) -> bool {
        self.write
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.dom.grant_unmap(self.gref, self.write);
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("gref", &self.gref)
            .field("write", &self.write)
            .field("gpa", &format_args!("{:#x}", self.gpa))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{grant, grant_flags, test_domain};

    #[test]
    fn map_sets_and_clears_in_use_flags() {
        let (dom, _) = test_domain(64);
        grant(&dom, 5, 0, 10, false);
        let m = dom.map_grant(5, true).unwrap();
        assert_eq!(m.gpa(), 10 << 12);
        assert_eq!(
            grant_flags(&dom, 5) & (GTF_READING | GTF_WRITING),
            GTF_READING | GTF_WRITING
        );
        let r = dom.map_grant(5, false).unwrap();
        drop(m);
        assert_eq!(
            grant_flags(&dom, 5) & (GTF_READING | GTF_WRITING),
            GTF_READING
        );
        drop(r);
        assert_eq!(grant_flags(&dom, 5) & (GTF_READING | GTF_WRITING), 0);
        assert!(dom.grants.lock().unwrap().is_empty());
    }

    #[test]
    fn hostile_entries_are_refused() {
        let (dom, _) = test_domain(64);
        // Outside the table.
        let e = dom.map_grant(u32::MAX, false).unwrap_err();
        assert_eq!(e.status(), -3);
        assert_eq!(dom.map_grant(4 * 512, false).unwrap_err().status(), -3);
        // Not granted at all, granted to another domain, read-only for a write.
        assert!(matches!(
            dom.map_grant(1, false),
            Err(GrantError::NotGranted(..))
        ));
        grant(&dom, 2, 7, 10, false);
        assert!(matches!(
            dom.map_grant(2, false),
            Err(GrantError::NotGranted(..))
        ));
        grant(&dom, 3, 0, 10, true);
        assert!(matches!(
            dom.map_grant(3, true),
            Err(GrantError::NotGranted(..))
        ));
        assert!(dom.map_grant(3, false).is_ok());
        // A frame outside RAM (the grant table itself, or far away).
        grant(&dom, 4, 0, 65, false);
        assert_eq!(dom.map_grant(4, false).unwrap_err().status(), -9);
        assert_eq!(grant_flags(&dom, 4) & (GTF_READING | GTF_WRITING), 0);
        grant(&dom, 6, 0, u32::MAX, false);
        assert_eq!(dom.map_grant(6, true).unwrap_err().status(), -9);
        assert!(dom.grants.lock().unwrap().is_empty());
    }

    #[test]
    fn page_tables_cannot_be_written_through_grants() {
        let (dom, _) = test_domain(64);
        // Frame 20 becomes an L1 page table (all-zero entries validate).
        {
            let mut mmu = dom.mmu.lock().unwrap();
            let mut log = Vec::new();
            mmu.get_type(&*dom.mem, &mut log, 20, PageType::L1).unwrap();
        }
        grant(&dom, 1, 0, 20, false);
        assert_eq!(dom.map_grant(1, true).unwrap_err().status(), -9);
        assert_eq!(grant_flags(&dom, 1) & (GTF_READING | GTF_WRITING), 0);
        // Reading a page table is harmless.
        assert!(dom.map_grant(1, false).is_ok());
        // And a frame mapped for writing cannot become a page table.
        grant(&dom, 2, 0, 21, false);
        let _m = dom.map_grant(2, true).unwrap();
        let mut mmu = dom.mmu.lock().unwrap();
        let mut log = Vec::new();
        assert!(mmu.get_type(&*dom.mem, &mut log, 21, PageType::L1).is_err());
    }
}
