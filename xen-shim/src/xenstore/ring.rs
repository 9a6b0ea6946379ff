//! The guest's xenstore ring (`struct xenstore_domain_interface`).
//!
//! One guest page holds a 1024-byte request ring, a 1024-byte response
//! ring and the free-running indices `req_cons`, `req_prod`, `rsp_cons`,
//! `rsp_prod`, followed by `server_features`, `connection` and `error`.
//! Both rings carry the same byte stream of xs_wire messages as the socket.
//!
//! Everything on the page is guest-controlled. Indices are re-read and
//! checked on every access; a producer more than 1024 bytes ahead of the
//! consumer, or a payload longer than `XENSTORE_PAYLOAD_MAX`, breaks the
//! ring for good: the `error` field is set and the ring is no longer served.
//! Work per call is bounded, so a guest that keeps refilling the ring from
//! another vCPU cannot keep the monitor busy forever.

use std::sync::atomic::{fence, Ordering};

use thiserror::Error;

use super::store::{ConnId, Store};
use super::wire::{FrameDecoder, FrameError};
use crate::mem::{GuestMem, MemError};

/// Size of each ring.
pub const RING_SIZE: u32 = 1024;
const OFF_REQ: u64 = 0;
const OFF_RSP: u64 = 1024;
const OFF_REQ_CONS: u64 = 2048;
const OFF_REQ_PROD: u64 = 2052;
const OFF_RSP_CONS: u64 = 2056;
const OFF_RSP_PROD: u64 = 2060;
const OFF_SERVER_FEATURES: u64 = 2064;
const OFF_CONNECTION: u64 = 2068;
const OFF_ERROR: u64 = 2072;

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`
pub const FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`
pub const FEATURE_ERROR: u32 = 2;
/// `XENSTORE_CONNECTED`
pub const CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`
pub const RECONNECT: u32 = 1;
/// `XENSTORE_ERROR_COMM`
pub const ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`
pub const ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`
pub const ERROR_PROTO: u32 = 3;

/// Bytes moved (both directions) per [`GuestRing::process`] call before it
/// returns with `more_work`.
pub const WORK_BUDGET: usize = 64 * 1024;

/// Why a ring is no longer served.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    #[error("ring index out of range (producer more than {RING_SIZE} bytes ahead)")]
    BadIndex,
    #[error("protocol violation: {0}")]
    Protocol(#[from] FrameError),
    #[error("guest memory: {0}")]
    Mem(#[from] MemError),
    #[error("domain released")]
    Released,
}

/// What [`GuestRing::process`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingOutcome {
    /// Indices moved (or the ring broke): notify the guest's store event
    /// channel.
    pub notify_guest: bool,
    /// The work budget ran out with data left: call `process` again soon.
    pub more_work: bool,
}

/// The store's end of one guest ring.
pub struct GuestRing {
    /// Guest-physical address of the ring page.
    pub page_gpa: u64,
    pub domid: u32,
    conn: ConnId,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    broken: Option<RingError>,
    features_written: bool,
    /// The guest breaks and reconnects its ring at will: rate-limit the lines.
    log: crate::guestlog::GuestLog,
}

impl std::fmt::Debug for GuestRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRing")
            .field("page_gpa", &format_args!("{:#x}", self.page_gpa))
            .field("domid", &self.domid)
            .field("broken", &self.broken)
            .finish()
    }
}

impl GuestRing {
    /// Attach to the ring page of `domid` at `page_gpa` and register the
    /// guest as an (unprivileged) client of `store`. Indices already on the
    /// page are kept, so a ring handed over by a boot loader keeps working.
    pub fn new(store: &mut Store, page_gpa: u64, domid: u32) -> GuestRing {
        GuestRing {
            page_gpa,
            domid,
            conn: store.connect(domid, domid == 0),
            decoder: FrameDecoder::new(),
            out: Vec::new(),
            out_pos: 0,
            broken: None,
            features_written: false,
            log: crate::guestlog::GuestLog::new(),
        }
    }

    /// The store connection of this ring.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Why the ring is no longer served, if it is not.
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// Unregister from the store (watches and transactions go).
    pub fn close(self, store: &mut Store) {
        store.disconnect(self.conn);
    }

    /// Serve the ring: send queued replies and watch events as space
    /// allows, and handle complete requests. Call on every event-channel
    /// notification from the guest and after in-process changes that may
    /// fire the guest's watches.
    pub fn process(&mut self, mem: &dyn GuestMem, store: &mut Store) -> RingOutcome {
        let mut outcome = RingOutcome::default();
        if self.broken.is_some() {
            return outcome;
        }
        if !store.conn_alive(self.conn) {
            self.broken = Some(RingError::Released);
            return outcome;
        }
        if let Err(e) = self.run(mem, store, &mut outcome) {
            self.fail(mem, store, e);
            outcome.notify_guest = true;
            outcome.more_work = false;
        }
        outcome
    }

    fn at(&self, off: u64) -> u64 {
        self.page_gpa.wrapping_add(off)
    }

    fn fail(&mut self, mem: &dyn GuestMem, store: &mut Store, e: RingError) {
        let domid = self.domid;
        self.log.limited(log::Level::Warn, || {
            format!("xenstore: domain {domid} ring broken: {e}; no longer served")
        });
        let code = match e {
            RingError::BadIndex => ERROR_RINGIDX,
            RingError::Protocol(_) => ERROR_PROTO,
            RingError::Mem(_) | RingError::Released => ERROR_COMM,
        };
        let _ = mem.write_u32(self.at(OFF_ERROR), code);
        self.broken = Some(e);
        self.decoder.clear();
        self.out = Vec::new();
        self.out_pos = 0;
        store.reset_conn(self.conn);
        store.clear_output(self.conn);
    }

    fn reconnect(&mut self, mem: &dyn GuestMem, store: &mut Store) -> Result<(), RingError> {
        let domid = self.domid;
        self.log.limited(log::Level::Info, || {
            format!("xenstore: domain {domid} reconnects its ring")
        });
        self.decoder.clear();
        self.out.clear();
        self.out_pos = 0;
        store.reset_conn(self.conn);
        store.clear_output(self.conn);
        for off in [
            OFF_REQ_CONS,
            OFF_REQ_PROD,
            OFF_RSP_CONS,
            OFF_RSP_PROD,
            OFF_ERROR,
        ] {
            mem.write_u32(self.at(off), 0)?;
        }
        fence(Ordering::SeqCst);
        mem.write_u32(self.at(OFF_CONNECTION), CONNECTED)?;
        Ok(())
    }

    fn run(
        &mut self,
        mem: &dyn GuestMem,
        store: &mut Store,
        outcome: &mut RingOutcome,
    ) -> Result<(), RingError> {
        if !self.features_written {
            mem.write_u32(
                self.at(OFF_SERVER_FEATURES),
                FEATURE_RECONNECTION | FEATURE_ERROR,
            )?;
            self.features_written = true;
        }
        if mem.read_u32(self.at(OFF_CONNECTION))? == RECONNECT {
            self.reconnect(mem, store)?;
            outcome.notify_guest = true;
        }
        let mut budget = WORK_BUDGET;
        loop {
            let mut moved = 0usize;
            // Output first: it frees the guest and our queue.
            loop {
                if self.out_pos >= self.out.len() {
                    match store.take_output(self.conn) {
                        Some(m) => {
                            self.out = m;
                            self.out_pos = 0;
                        }
                        None => {
                            self.out.clear();
                            self.out_pos = 0;
                            break;
                        }
                    }
                }
                let n = self.write_rsp(mem)?;
                if n == 0 {
                    break;
                }
                moved += n;
            }
            if store.accepts_requests(self.conn) {
                moved += self.read_req(mem, store)?;
            }
            if moved == 0 {
                return Ok(());
            }
            outcome.notify_guest = true;
            budget = budget.saturating_sub(moved);
            if budget == 0 {
                outcome.more_work = true;
                return Ok(());
            }
        }
    }

    /// Copy as much of the pending output into the response ring as fits
    /// contiguously. Returns the bytes written.
    fn write_rsp(&mut self, mem: &dyn GuestMem) -> Result<usize, RingError> {
        let pending = self.out.get(self.out_pos..).unwrap_or(&[]);
        if pending.is_empty() {
            return Ok(0);
        }
        let cons = mem.read_u32(self.at(OFF_RSP_CONS))?;
        let prod = mem.read_u32(self.at(OFF_RSP_PROD))?;
        fence(Ordering::Acquire);
        let used = prod.wrapping_sub(cons);
        if used > RING_SIZE {
            return Err(RingError::BadIndex);
        }
        let free = (RING_SIZE - used) as usize;
        let off = prod % RING_SIZE;
        let contiguous = (RING_SIZE - off) as usize;
        let n = free.min(contiguous).min(pending.len());
        if n == 0 {
            return Ok(0);
        }
        mem.write(self.at(OFF_RSP + u64::from(off)), &pending[..n])?;
        fence(Ordering::Release);
        // n <= RING_SIZE, so it fits in u32.
        mem.write_u32(self.at(OFF_RSP_PROD), prod.wrapping_add(n as u32))?;
        self.out_pos += n;
        Ok(n)
    }

    /// Take request bytes (never past the end of the current message) and
    /// handle a completed message. Returns the bytes consumed.
    fn read_req(&mut self, mem: &dyn GuestMem, store: &mut Store) -> Result<usize, RingError> {
        let cons = mem.read_u32(self.at(OFF_REQ_CONS))?;
        let prod = mem.read_u32(self.at(OFF_REQ_PROD))?;
        fence(Ordering::Acquire);
        let avail = prod.wrapping_sub(cons);
        if avail > RING_SIZE {
            return Err(RingError::BadIndex);
        }
        if avail == 0 {
            return Ok(0);
        }
        let off = cons % RING_SIZE;
        let contiguous = RING_SIZE - off;
        let n = (avail.min(contiguous) as usize).min(self.decoder.wanted());
        let mut buf = [0u8; RING_SIZE as usize];
        let chunk = &mut buf[..n];
        mem.read(self.at(OFF_REQ + u64::from(off)), chunk)?;
        fence(Ordering::SeqCst);
        mem.write_u32(self.at(OFF_REQ_CONS), cons.wrapping_add(n as u32))?;
        let (_, msg) = self.decoder.push(chunk)?;
        if let Some((hdr, payload)) = msg {
            store.handle_message(self.conn, &hdr, &payload);
        }
        Ok(n)
    }
}

impl Store {
    /// Drop everything queued for `conn`.
    pub(crate) fn clear_output(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.clear();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mem::VecMem;
    use crate::xenstore::wire::{encode_message, Header, MsgType, HEADER_LEN};

    pub(crate) const PAGE: u64 = 0x3000;

    /// The guest's side of a ring, as Linux xenbus drives it.
    pub(crate) struct Guest<'a> {
        pub mem: &'a VecMem,
        pub rx: Vec<u8>,
        next_req: u32,
    }

    impl<'a> Guest<'a> {
        pub fn new(mem: &'a VecMem) -> Self {
            Guest {
                mem,
                rx: Vec::new(),
                next_req: 1,
            }
        }
        pub fn u32(&self, off: u64) -> u32 {
            self.mem.read_u32(PAGE + off).unwrap()
        }
        pub fn set(&self, off: u64, v: u32) {
            self.mem.write_u32(PAGE + off, v).unwrap()
        }
        /// Put bytes into the request ring; returns how many fit.
        pub fn send_bytes(&self, data: &[u8]) -> usize {
            let cons = self.u32(OFF_REQ_CONS);
            let mut prod = self.u32(OFF_REQ_PROD);
            let mut n = 0;
            while n < data.len() && prod.wrapping_sub(cons) < RING_SIZE {
                self.mem
                    .write_u8(PAGE + OFF_REQ + u64::from(prod % RING_SIZE), data[n])
                    .unwrap();
                prod = prod.wrapping_add(1);
                n += 1;
            }
            self.set(OFF_REQ_PROD, prod);
            n
        }
        pub fn send(&mut self, ty: MsgType, tx: u32, payload: &[u8]) -> u32 {
            let id = self.next_req;
            self.next_req += 1;
            let m = encode_message(ty.as_u32(), id, tx, payload);
            assert_eq!(self.send_bytes(&m), m.len(), "request ring full");
            id
        }
        /// Drain the response ring into `rx`.
        pub fn pull(&mut self) {
            let mut cons = self.u32(OFF_RSP_CONS);
            let prod = self.u32(OFF_RSP_PROD);
            while cons != prod {
                self.rx.push(
                    self.mem
                        .read_u8(PAGE + OFF_RSP + u64::from(cons % RING_SIZE))
                        .unwrap(),
                );
                cons = cons.wrapping_add(1);
            }
            self.set(OFF_RSP_CONS, cons);
        }
        /// Complete messages received so far.
        pub fn messages(&mut self) -> Vec<(Header, Vec<u8>)> {
            self.pull();
            let mut out = Vec::new();
            loop {
                if self.rx.len() < HEADER_LEN {
                    break;
                }
                let h = Header::parse(self.rx[..HEADER_LEN].try_into().unwrap());
                let end = HEADER_LEN + h.len as usize;
                if self.rx.len() < end {
                    break;
                }
                out.push((h, self.rx[HEADER_LEN..end].to_vec()));
                self.rx.drain(..end);
            }
            out
        }
    }

    fn setup() -> (VecMem, Store, GuestRing) {
        let mem = VecMem::new(0x10000);
        let mut store = Store::new();
        crate::xenstore::domain::populate_domain(&mut store, 5, "guest", 65536, 1).unwrap();
        let ring = GuestRing::new(&mut store, PAGE, 5);
        (mem, store, ring)
    }

    #[test]
    fn request_reply_over_ring() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        g.send(MsgType::Read, 0, b"name\0");
        g.send(MsgType::Write, 0, b"data/x\0hello");
        let o = ring.process(&mem, &mut store);
        assert!(o.notify_guest);
        assert_eq!(
            g.u32(OFF_SERVER_FEATURES),
            FEATURE_RECONNECTION | FEATURE_ERROR
        );
        let msgs = g.messages();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].0.ty, MsgType::Read.as_u32());
        assert_eq!(msgs[0].1, b"guest");
        assert_eq!(msgs[1].1, b"OK\0");
        assert_eq!(store.read("/local/domain/5/data/x").unwrap(), b"hello");
        // Nothing to do: no notification.
        assert!(!ring.process(&mem, &mut store).notify_guest);
    }

    #[test]
    fn message_split_across_notifications() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        let m = encode_message(MsgType::Read.as_u32(), 9, 0, b"name\0");
        g.send_bytes(&m[..5]);
        ring.process(&mem, &mut store);
        assert!(g.messages().is_empty());
        g.send_bytes(&m[5..]);
        ring.process(&mem, &mut store);
        let msgs = g.messages();
        assert_eq!(msgs[0].0.req_id, 9);
        assert_eq!(msgs[0].1, b"guest");
    }

    #[test]
    fn indices_wrap_around_u32() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        for off in [OFF_REQ_CONS, OFF_REQ_PROD, OFF_RSP_CONS, OFF_RSP_PROD] {
            g.set(off, u32::MAX - 20);
        }
        for _ in 0..40 {
            g.send(MsgType::Read, 0, b"name\0");
            ring.process(&mem, &mut store);
            let msgs = g.messages();
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].1, b"guest");
        }
    }

    #[test]
    fn hostile_request_index_breaks_ring() {
        let (mem, mut store, mut ring) = setup();
        let g = Guest::new(&mem);
        g.set(OFF_REQ_PROD, 1025);
        let o = ring.process(&mem, &mut store);
        assert!(o.notify_guest);
        assert_eq!(ring.broken(), Some(RingError::BadIndex));
        assert_eq!(g.u32(OFF_ERROR), ERROR_RINGIDX);
        // Stays broken, does nothing, never loops.
        g.set(OFF_REQ_PROD, 0);
        assert_eq!(ring.process(&mem, &mut store), RingOutcome::default());
        // The store still serves others.
        assert_eq!(store.read("/local/domain/5/name").unwrap(), b"guest");
    }

    #[test]
    fn hostile_response_index_breaks_ring() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        g.set(OFF_RSP_CONS, 5000);
        g.send(MsgType::Read, 0, b"name\0");
        ring.process(&mem, &mut store);
        assert_eq!(ring.broken(), Some(RingError::BadIndex));
        assert_eq!(g.u32(OFF_ERROR), ERROR_RINGIDX);
    }

    #[test]
    fn oversized_payload_breaks_ring() {
        let (mem, mut store, mut ring) = setup();
        let g = Guest::new(&mem);
        let h = Header {
            ty: MsgType::Write.as_u32(),
            req_id: 1,
            tx_id: 0,
            len: 4097,
        };
        g.send_bytes(&h.encode());
        ring.process(&mem, &mut store);
        assert_eq!(
            ring.broken(),
            Some(RingError::Protocol(FrameError::TooLong(4097)))
        );
        assert_eq!(g.u32(OFF_ERROR), ERROR_PROTO);
    }

    #[test]
    fn unbacked_page_is_an_error_not_a_panic() {
        let mem = VecMem::new(0x1000);
        let mut store = Store::new();
        let mut ring = GuestRing::new(&mut store, 0x10_0000, 5);
        ring.process(&mem, &mut store);
        assert!(matches!(ring.broken(), Some(RingError::Mem(_))));
    }

    #[test]
    fn full_response_ring_keeps_replies_pending_and_stops_reading() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        // Value of ~1000 bytes: each reply nearly fills the response ring.
        store
            .write("/local/domain/5/big", vec![b'x'; 1000])
            .unwrap();
        let mut sent = 0;
        // Guest sends requests without reading replies.
        for _ in 0..200 {
            let m = encode_message(MsgType::Read.as_u32(), 1, 0, b"big\0");
            if g.send_bytes(&m) < m.len() {
                break;
            }
            sent += 1;
            ring.process(&mem, &mut store);
        }
        assert!(sent > 20, "sent {sent}");
        // Response ring full, at most `outstanding` replies queued.
        assert_eq!(
            g.u32(OFF_RSP_PROD).wrapping_sub(g.u32(OFF_RSP_CONS)),
            RING_SIZE
        );
        assert!(store.pending_replies(ring.conn()) <= store.quotas().outstanding);
        // The guest now reads everything; all replies arrive intact.
        let mut replies = 0;
        for _ in 0..1000 {
            let msgs = g.messages();
            for (_, p) in &msgs {
                assert_eq!(p.len(), 1000);
            }
            replies += msgs.len();
            ring.process(&mem, &mut store);
            if replies == sent {
                break;
            }
        }
        assert_eq!(replies, sent);
        assert_eq!(ring.broken(), None);
    }

    #[test]
    fn watch_events_reach_guest() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        g.send(MsgType::Watch, 0, b"control/shutdown\0tok\0");
        ring.process(&mem, &mut store);
        let msgs = g.messages();
        assert_eq!(msgs[0].1, b"OK\0");
        assert_eq!(msgs[1].0.ty, MsgType::WatchEvent.as_u32());
        assert_eq!(msgs[1].1, b"control/shutdown\0tok\0");
        store
            .write("/local/domain/5/control/shutdown", "poweroff")
            .unwrap();
        assert!(ring.process(&mem, &mut store).notify_guest);
        let msgs = g.messages();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0.req_id, 0);
        assert_eq!(msgs[0].1, b"control/shutdown\0tok\0");
    }

    #[test]
    fn reconnect_resets_ring_and_watches() {
        let (mem, mut store, mut ring) = setup();
        let mut g = Guest::new(&mem);
        g.send(MsgType::Watch, 0, b"data\0t\0");
        ring.process(&mem, &mut store);
        g.messages();
        g.set(OFF_CONNECTION, RECONNECT);
        ring.process(&mem, &mut store);
        assert_eq!(g.u32(OFF_CONNECTION), CONNECTED);
        assert_eq!(g.u32(OFF_REQ_PROD), 0);
        assert_eq!(g.u32(OFF_RSP_PROD), 0);
        assert_eq!(store.domain_usage(5).watches, 0);
        g.rx.clear();
        g.send(MsgType::Read, 0, b"name\0");
        ring.process(&mem, &mut store);
        assert_eq!(g.messages()[0].1, b"guest");
    }

    #[test]
    fn guest_over_memory_quota_is_still_served() {
        let (mem, mut store, mut ring) = setup();
        let mut q = store.quotas().clone();
        q.memory = store.domain_usage(5).memory() + 200;
        store.set_quotas(q);
        // Dom0 fills a guest-owned dir: the guest now exceeds its quota.
        store
            .write("/local/domain/5/data/fat", vec![b'x'; 4000])
            .unwrap();
        let mut g = Guest::new(&mem);
        g.send(MsgType::Write, 0, b"data/more\0x");
        g.send(MsgType::Rm, 0, b"data/fat\0");
        g.send(MsgType::Write, 0, b"data/more\0x");
        ring.process(&mem, &mut store);
        let replies: Vec<Vec<u8>> = g.messages().into_iter().map(|m| m.1).collect();
        assert_eq!(
            replies,
            vec![b"ENOMEM\0".to_vec(), b"OK\0".to_vec(), b"OK\0".to_vec()]
        );
    }

    #[test]
    fn released_domain_is_not_served() {
        let (mem, mut store, mut ring) = setup();
        store.introduce_domain(5, 0, 0).unwrap();
        store.release_domain(5).unwrap();
        let mut g = Guest::new(&mem);
        g.send(MsgType::Read, 0, b"/local\0");
        ring.process(&mem, &mut store);
        assert_eq!(ring.broken(), Some(RingError::Released));
        assert!(g.messages().is_empty());
    }
}
