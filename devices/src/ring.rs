//! Shared-ring helpers for every backend: the ring pages a frontend granted
//! (one or several, not contiguous in guest memory), and the backend half of
//! Xen's `ring.h` protocol with its notification rules.
//!
//! Every index in the shared page is the guest's and may be garbage: a
//! frontend that claims more requests than the ring holds, or whose
//! responses would overrun, breaks the ring and nothing more is read from it
//! (as Linux's backends do).

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use xen_shim::domain::Domain;
use xen_shim::grantmap::{GrantError, Mapping};

/// Size of the shared ring header (`req_prod`, `req_event`, `rsp_prod`,
/// `rsp_event`, padding).
pub const HEADER: usize = 64;
const REQ_PROD: u64 = 0;
const REQ_EVENT: u64 = 4;
const RSP_PROD: u64 = 8;
const RSP_EVENT: u64 = 12;
pub const PAGE: usize = 4096;

/// Guest pages mapped from grants, addressed as one byte range.
pub struct GrantedPages {
    dom: Arc<Domain>,
    pages: Vec<Mapping>,
}

impl GrantedPages {
    /// Map `grefs`, in order, for reading and writing.
    pub fn map(dom: &Arc<Domain>, grefs: &[u32]) -> Result<GrantedPages, GrantError> {
        let pages = grefs
            .iter()
            .map(|&g| dom.map_grant(g, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GrantedPages {
            dom: dom.clone(),
            pages,
        })
    }

    pub fn len(&self) -> usize {
        self.pages.len() * PAGE
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Copy `buf.len()` bytes at `off`; false when out of range.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        self.access(off, buf.len(), |gpa, range| {
            self.dom.mem.read(gpa, &mut buf[range]).is_ok()
        })
    }

    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        self.access(off, data.len(), |gpa, range| {
            self.dom.mem.write(gpa, &data[range]).is_ok()
        })
    }

    fn access(
        &self,
        off: usize,
        len: usize,
        mut f: impl FnMut(u64, std::ops::Range<usize>) -> bool,
    ) -> bool {
        if off.checked_add(len).is_none_or(|e| e > self.len()) {
            return false;
        }
        let mut done = 0;
        while done < len {
            let at = off + done;
            let n = (PAGE - at % PAGE).min(len - done);
            let gpa = self.pages[at / PAGE].gpa() + (at % PAGE) as u64;
            if !f(gpa, done..done + n) {
                return false;
            }
            done += n;
        }
        true
    }

    pub fn read_u32(&self, off: usize) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(off, &mut b).then(|| u32::from_le_bytes(b))
    }

    pub fn write_u32(&self, off: usize, v: u32) -> bool {
        self.write(off, &v.to_le_bytes())
    }
}

/// Why a ring stopped being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("frontend claims {0} unconsumed requests on a ring of {1}")]
    TooManyRequests(u32, u32),
    #[error("the ring's pages are not readable")]
    Unreadable,
}

/// The backend end of a shared ring with fixed-size entries (the union of
/// request and response).
pub struct BackRing {
    pages: GrantedPages,
    entry: usize,
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
    broken: Option<RingError>,
}

/// `__RING_SIZE`: the largest power of two of entries that fit.
pub fn ring_size(bytes: usize, entry: usize) -> u32 {
    let n = (bytes.saturating_sub(HEADER) / entry.max(1)) as u32;
    if n == 0 {
        0
    } else {
        1 << (31 - n.leading_zeros())
    }
}

impl BackRing {
    /// A backend ring over `pages`, attached as the frontend initialised it
    /// (SHARED_RING_INIT leaves every index at 0; BACK_RING_ATTACH picks up
    /// the current `rsp_prod` after a reconnect).
    pub fn new(pages: GrantedPages, entry: usize) -> BackRing {
        let size = ring_size(pages.len(), entry);
        let rsp = pages.read_u32(RSP_PROD as usize).unwrap_or(0);
        BackRing {
            pages,
            entry,
            size,
            req_cons: rsp,
            rsp_prod_pvt: rsp,
            broken: None,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    fn slot(&self, idx: u32) -> usize {
        HEADER + (idx & (self.size - 1)) as usize * self.entry
    }

    fn fail(&mut self, e: RingError) {
        if self.broken.is_none() {
            log::warn!("backend ring stopped: {e}");
        }
        self.broken = Some(e);
    }

    /// Unconsumed requests, checked against the ring size.
    fn unconsumed(&mut self) -> u32 {
        if self.broken.is_some() || self.size == 0 {
            return 0;
        }
        let Some(prod) = self.pages.read_u32(REQ_PROD as usize) else {
            self.fail(RingError::Unreadable);
            return 0;
        };
        fence(Ordering::Acquire);
        let n = prod.wrapping_sub(self.req_cons);
        if n > self.size {
            self.fail(RingError::TooManyRequests(n, self.size));
            return 0;
        }
        // RING_REQUEST_CONS_OVERFLOW: never consume more than we can answer.
        let room = self
            .size
            .saturating_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        n.min(room)
    }

    /// Copy the next request into `buf` (at most one entry); false when none.
    pub fn next_request(&mut self, buf: &mut [u8]) -> bool {
        if self.unconsumed() == 0 {
            return false;
        }
        let len = buf.len().min(self.entry);
        let off = self.slot(self.req_cons);
        if !self.pages.read(off, &mut buf[..len]) {
            self.fail(RingError::Unreadable);
            return false;
        }
        self.req_cons = self.req_cons.wrapping_add(1);
        true
    }

    /// Queue a response (published by [`BackRing::push_responses`]).
    pub fn put_response(&mut self, rsp: &[u8]) {
        let len = rsp.len().min(self.entry);
        let off = self.slot(self.rsp_prod_pvt);
        if self.size == 0 || !self.pages.write(off, &rsp[..len]) {
            self.fail(RingError::Unreadable);
            return;
        }
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    /// RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publish the queued responses;
    /// true when the frontend asked to be notified of them.
    pub fn push_responses(&mut self) -> bool {
        let Some(old) = self.pages.read_u32(RSP_PROD as usize) else {
            return false;
        };
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        fence(Ordering::Release);
        self.pages.write_u32(RSP_PROD as usize, new);
        fence(Ordering::SeqCst);
        let event = self.pages.read_u32(RSP_EVENT as usize).unwrap_or(0);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS: true if requests are waiting; if not,
    /// asks the frontend for a notification on the next one.
    pub fn final_check_for_requests(&mut self) -> bool {
        if self.unconsumed() > 0 {
            return true;
        }
        if self.broken.is_some() {
            return false;
        }
        self.pages
            .write_u32(REQ_EVENT as usize, self.req_cons.wrapping_add(1));
        fence(Ordering::SeqCst);
        self.unconsumed() > 0
    }

    /// The pages behind the ring (for tests and frontends-in-tests).
    pub fn pages(&self) -> &GrantedPages {
        &self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_shim::testing::{grant, test_domain};

    fn ring(dom: &Arc<Domain>, entry: usize) -> BackRing {
        grant(dom, 8, 0, 30, false);
        BackRing::new(GrantedPages::map(dom, &[8]).unwrap(), entry)
    }

    #[test]
    fn sizes_match_ring_h() {
        assert_eq!(ring_size(4096, 112), 32); // blkif
        assert_eq!(ring_size(4096, 12), 256); // netif tx
        assert_eq!(ring_size(4096, 8), 256); // netif rx
        assert_eq!(ring_size(4096 * 4, 112), 128);
        assert_eq!(ring_size(10, 112), 0);
    }

    #[test]
    fn requests_responses_and_notify_rules() {
        let (dom, _) = test_domain(64);
        let mut r = ring(&dom, 16);
        let base = 30u64 << 12;
        // Frontend: two requests, asks for notification of the first response.
        dom.mem.write(base + 64, &[1; 16]).unwrap();
        dom.mem.write(base + 80, &[2; 16]).unwrap();
        dom.mem.write_u32(base, 2).unwrap();
        dom.mem.write_u32(base + RSP_EVENT, 1).unwrap();
        let mut b = [0u8; 16];
        assert!(r.next_request(&mut b));
        assert_eq!(b, [1; 16]);
        assert!(r.next_request(&mut b));
        assert_eq!(b, [2; 16]);
        assert!(!r.next_request(&mut b));
        r.put_response(&[9; 16]);
        assert!(r.push_responses());
        assert_eq!(dom.mem.read_u32(base + RSP_PROD).unwrap(), 1);
        r.put_response(&[9; 16]);
        assert!(!r.push_responses(), "rsp_event 1 already passed");
        assert!(!r.final_check_for_requests());
        assert_eq!(dom.mem.read_u32(base + REQ_EVENT).unwrap(), 3);
    }

    #[test]
    fn garbage_indices_break_the_ring() {
        let (dom, _) = test_domain(64);
        let mut r = ring(&dom, 112);
        dom.mem.write_u32(30 << 12, 0x8000_0000).unwrap();
        let mut b = [0u8; 112];
        assert!(!r.next_request(&mut b));
        assert!(matches!(r.broken(), Some(RingError::TooManyRequests(..))));
        assert!(!r.final_check_for_requests());
    }

    #[test]
    fn never_consumes_more_than_it_can_answer() {
        let (dom, _) = test_domain(64);
        let mut r = ring(&dom, 112);
        dom.mem.write_u32(30 << 12, 32).unwrap();
        let mut b = [0u8; 112];
        for _ in 0..32 {
            assert!(r.next_request(&mut b));
        }
        // The frontend "adds" more without taking responses: refused.
        dom.mem.write_u32(30 << 12, 40).unwrap();
        assert!(!r.next_request(&mut b));
        r.put_response(&b);
        r.push_responses();
        assert!(r.next_request(&mut b) || r.broken().is_some());
    }

    #[test]
    fn entries_straddle_pages() {
        let (dom, _) = test_domain(64);
        grant(&dom, 1, 0, 40, false);
        grant(&dom, 2, 0, 50, false);
        let p = GrantedPages::map(&dom, &[1, 2]).unwrap();
        assert!(p.write(4090, &[7; 12]));
        assert_eq!(dom.mem.read_u32(40 << 12 | 4092).unwrap(), 0x0707_0707);
        assert_eq!(dom.mem.read_u32(50 << 12).unwrap(), 0x0707_0707);
        assert!(!p.write(8190, &[0; 4]));
        assert!(!p.read(usize::MAX, &mut [0; 4]));
    }
}
