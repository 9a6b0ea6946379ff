//! Connections: per-client state and the request dispatcher.
//!
//! A transport (socket thread, guest ring) registers a connection with
//! [`Store::connect`], hands every complete request to
//! [`Store::handle_message`], and sends whatever [`Store::take_output`]
//! yields: replies in request order, interleaved with watch events.

use std::collections::VecDeque;

use super::store::{parse_perms, ConnId, Op, OpOut, Store, DOMID_FIRST_RESERVED};
use super::wire::{
    encode_error, encode_message, encode_watch_event, number, one_arg, strings, Header, MsgType,
    XsError, PAYLOAD_MAX,
};

/// Outgoing messages of one connection.
#[derive(Default)]
pub(crate) struct OutQueue {
    msgs: VecDeque<(Vec<u8>, bool)>,
    pub replies: usize,
    pub events: usize,
    pub bytes: usize,
    pub dropped: u64,
    pub notifier: Option<Box<dyn Fn() + Send>>,
}

impl OutQueue {
    pub fn push_reply(&mut self, m: Vec<u8>) {
        self.bytes = self.bytes.saturating_add(m.len());
        self.replies = self.replies.saturating_add(1);
        self.msgs.push_back((m, false));
    }

    /// Queue an event unless `limit` events are already waiting (then it is
    /// dropped and counted). Returns whether it was queued.
    pub fn push_event(&mut self, m: Vec<u8>, limit: usize) -> bool {
        if self.events >= limit {
            if self.dropped == 0 || self.dropped.is_power_of_two() {
                log::warn!(
                    "xenstore: watch event queue full, dropping events ({} so far)",
                    self.dropped + 1
                );
            }
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.bytes = self.bytes.saturating_add(m.len());
        self.events = self.events.saturating_add(1);
        self.msgs.push_back((m, true));
        true
    }

    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let (m, is_event) = self.msgs.pop_front()?;
        self.bytes = self.bytes.saturating_sub(m.len());
        if is_event {
            self.events = self.events.saturating_sub(1);
        } else {
            self.replies = self.replies.saturating_sub(1);
        }
        Some(m)
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.replies = 0;
        self.events = 0;
        self.bytes = 0;
    }

    pub fn notify(&self) {
        if let Some(f) = &self.notifier {
            f();
        }
    }
}

pub(crate) struct Conn {
    pub domid: u32,
    pub privileged: bool,
    /// False once the domain was released: requests are no longer served.
    pub alive: bool,
    pub watches: Vec<super::watch::Watch>,
    pub queue: OutQueue,
}

impl Conn {
    pub fn new(domid: u32, privileged: bool) -> Conn {
        Conn {
            domid,
            privileged,
            alive: true,
            watches: Vec::new(),
            queue: OutQueue::default(),
        }
    }
}

const OK: &[u8] = b"OK\0";

/// A reply payload (or error) and, for WATCH, the first event (path, token).
type Dispatched = (Result<Vec<u8>, XsError>, Option<(String, String)>);

fn domid_arg(b: &[u8]) -> Result<u32, XsError> {
    let v = number(b)?;
    u32::try_from(v)
        .ok()
        .filter(|&d| d <= 0xffff)
        .ok_or(XsError::Inval)
}

/// INTRODUCE's mfn is "signed decimal".
fn mfn_arg(b: &[u8]) -> Result<u64, XsError> {
    match b.strip_prefix(b"-") {
        Some(rest) => Ok(number(rest)?.wrapping_neg()),
        None => number(b),
    }
}

impl Store {
    /// Register a client. Socket clients and the toolstack are
    /// `privileged`; a guest's ring is not (unless it is domain 0).
    pub fn connect(&mut self, domid: u32, privileged: bool) -> ConnId {
        let mut id = self.next_conn;
        while id == 0 || self.conns.contains_key(&ConnId(id)) {
            id = id.wrapping_add(1);
        }
        self.next_conn = id.wrapping_add(1);
        self.conns.insert(ConnId(id), Conn::new(domid, privileged));
        ConnId(id)
    }

    /// Forget a client with its watches, transactions and queued output.
    pub fn disconnect(&mut self, conn: ConnId) {
        if conn == Store::LOCAL {
            return;
        }
        self.reset_conn(conn);
        self.conns.remove(&conn);
    }

    /// Drop the watches and transactions of `conn` (RESET_WATCHES).
    pub(crate) fn reset_conn(&mut self, conn: ConnId) {
        self.remove_all_watches(conn);
        self.abort_all_txns(conn);
    }

    /// Called (under the store lock, so it must not block or lock the
    /// store) whenever output is queued for `conn`.
    pub fn set_notifier(&mut self, conn: ConnId, f: Box<dyn Fn() + Send>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.notifier = Some(f);
        }
    }

    /// Next message to send to `conn`.
    pub fn take_output(&mut self, conn: ConnId) -> Option<Vec<u8>> {
        self.conns.get_mut(&conn)?.queue.pop()
    }

    /// Replies queued for `conn` and not taken yet.
    pub fn pending_replies(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queue.replies)
    }

    /// Events queued for `conn` and not taken yet.
    pub fn pending_events(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queue.events)
    }

    /// Bytes queued for `conn`.
    pub fn pending_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queue.bytes)
    }

    /// Watch events dropped because `conn`'s queue (or channel) was full.
    pub fn dropped_events(&self, conn: ConnId) -> u64 {
        self.conns.get(&conn).map_or(0, |c| c.queue.dropped)
    }

    /// Registered connections, the in-process one included.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether `conn` exists and is still served (its domain not released).
    pub fn conn_alive(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.alive)
    }

    /// Whether `conn` may send more requests now: a guest with
    /// [`Quotas::outstanding`](super::Quotas::outstanding) replies not yet
    /// taken has to wait. (A guest at its memory quota is still read: its
    /// requests that would grow get ENOMEM, and it can free memory.)
    pub fn accepts_requests(&self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        if !c.alive {
            return false;
        }
        if c.privileged || c.domid == 0 {
            return true;
        }
        c.queue.replies < self.quotas.outstanding
    }

    /// Handle one request from `conn`; the reply (and, for WATCH, the first
    /// event) is queued for [`Store::take_output`]. Never panics on any
    /// input; unknown types get ENOSYS.
    pub fn handle_message(&mut self, conn: ConnId, hdr: &Header, payload: &[u8]) {
        if !self.conn_alive(conn) {
            return;
        }
        let (result, first_event) = if payload.len() > self.quotas.payload_max.min(PAYLOAD_MAX) {
            (Err(XsError::TooBig), None)
        } else {
            self.dispatch(conn, hdr, payload)
        };
        let reply = match result {
            Ok(p) if p.len() <= PAYLOAD_MAX => encode_message(hdr.ty, hdr.req_id, hdr.tx_id, &p),
            Ok(_) => encode_error(hdr.req_id, hdr.tx_id, XsError::TooBig),
            Err(e) => encode_error(hdr.req_id, hdr.tx_id, e),
        };
        let limit = match self.caller(conn) {
            Ok(c) => self.event_limit(&c),
            Err(_) => 0,
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_reply(reply);
            if let Some((path, token)) = first_event {
                c.queue.push_event(encode_watch_event(&path, &token), limit);
            }
            c.queue.notify();
        }
    }

    fn require_privileged(&self, conn: ConnId) -> Result<(), XsError> {
        if self.caller(conn)?.privileged {
            Ok(())
        } else {
            Err(XsError::Acces)
        }
    }

    fn dispatch(&mut self, conn: ConnId, hdr: &Header, payload: &[u8]) -> Dispatched {
        if hdr.msg_type() == Some(MsgType::Watch) {
            return match self.do_watch(conn, payload) {
                Ok(ev) => (Ok(OK.to_vec()), Some(ev)),
                Err(e) => (Err(e), None),
            };
        }
        (self.dispatch_simple(conn, hdr, payload), None)
    }

    fn do_watch(&mut self, conn: ConnId, payload: &[u8]) -> Result<(String, String), XsError> {
        let args = strings(payload)?;
        let (path, token, depth) = match args.as_slice() {
            [p, t] => (*p, *t, None),
            [p, t, []] => (*p, *t, None),
            [p, t, d] => (
                *p,
                *t,
                Some(u32::try_from(number(d)?).map_err(|_| XsError::Inval)?),
            ),
            _ => return Err(XsError::Inval),
        };
        let first = self.add_watch(conn, path, token, depth, None)?;
        Ok((first, String::from_utf8_lossy(token).into_owned()))
    }

    fn tree_op(&mut self, conn: ConnId, tx: u32, op: Op<'_>) -> Result<Vec<u8>, XsError> {
        Ok(match self.run_op(conn, tx, &op)? {
            OpOut::Value(v) => v,
            OpOut::Raw(v) => v,
            OpOut::Names(names) => {
                let mut out = Vec::new();
                for n in names {
                    out.extend_from_slice(n.as_bytes());
                    out.push(0);
                }
                out
            }
            OpOut::Perms(perms) => perms_payload(&perms),
            OpOut::Done => OK.to_vec(),
        })
    }

    fn dispatch_simple(
        &mut self,
        conn: ConnId,
        hdr: &Header,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        use MsgType as T;
        let tx = hdr.tx_id;
        let ty = match hdr.msg_type() {
            Some(T::WatchEvent | T::Error | T::Invalid) | None => return Err(XsError::NoSys),
            Some(t) => t,
        };
        match ty {
            T::Read => self.tree_op(conn, tx, Op::Read(one_arg(payload)?)),
            T::Write => {
                let nul = payload.iter().position(|&b| b == 0).ok_or(XsError::Inval)?;
                let (path, rest) = payload.split_at(nul);
                self.tree_op(conn, tx, Op::Write(path, rest.get(1..).unwrap_or(&[])))
            }
            T::Mkdir => self.tree_op(conn, tx, Op::Mkdir(one_arg(payload)?)),
            T::Rm => self.tree_op(conn, tx, Op::Rm(one_arg(payload)?)),
            T::Directory => self.tree_op(conn, tx, Op::Directory(one_arg(payload)?)),
            T::DirectoryPart => match strings(payload)?.as_slice() {
                [path, off] => {
                    let off = number(off)?;
                    self.tree_op(conn, tx, Op::DirectoryPart(path, off))
                }
                _ => Err(XsError::Inval),
            },
            T::GetPerms => {
                let path = one_arg(payload)?;
                if tx == 0 {
                    if let Some(r) = self.special_perms_op(conn, path, None) {
                        return r.map(|p| perms_payload(&p));
                    }
                }
                self.tree_op(conn, tx, Op::GetPerms(path))
            }
            T::SetPerms => {
                let args = strings(payload)?;
                let (path, perms) = args.split_first().ok_or(XsError::Inval)?;
                // Some clients end the list with an empty string.
                let perms: Vec<&[u8]> = perms.iter().copied().filter(|p| !p.is_empty()).collect();
                let perms = parse_perms(&perms)?;
                if tx == 0 {
                    if let Some(r) = self.special_perms_op(conn, path, Some(&perms)) {
                        return r.map(|_| OK.to_vec());
                    }
                }
                self.tree_op(conn, tx, Op::SetPerms(path, perms))
            }
            T::Unwatch => match strings(payload)?.as_slice() {
                [path, token] | [path, token, _] => {
                    self.remove_watch(conn, path, token).map(|()| OK.to_vec())
                }
                _ => Err(XsError::Inval),
            },
            T::TransactionStart => {
                if tx != 0 {
                    let ours = self.txns.get(&tx).is_some_and(|t| t.conn == conn);
                    return Err(if ours { XsError::Busy } else { XsError::NoEnt });
                }
                let id = self.txn_start(conn)?;
                Ok(format!("{id}\0").into_bytes())
            }
            T::TransactionEnd => {
                let commit = match one_arg(payload)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(XsError::Inval),
                };
                if tx == 0 {
                    return Err(XsError::NoEnt);
                }
                self.txn_end(conn, tx, commit).map(|()| OK.to_vec())
            }
            T::GetDomainPath => {
                let domid = domid_arg(one_arg(payload)?)?;
                Ok(format!("/local/domain/{domid}\0").into_bytes())
            }
            T::Introduce => {
                self.require_privileged(conn)?;
                let args = strings(payload)?;
                let [domid, mfn, port, ..] = args.as_slice() else {
                    return Err(XsError::Inval);
                };
                let domid = domid_arg(domid)?;
                let mfn = mfn_arg(mfn)?;
                let port = u32::try_from(number(port)?).map_err(|_| XsError::Inval)?;
                self.introduce_domain(domid, mfn, port)
                    .map(|()| OK.to_vec())
            }
            T::Release => {
                self.require_privileged(conn)?;
                let domid = domid_arg(one_arg(payload)?)?;
                self.release_domain(domid).map(|()| OK.to_vec())
            }
            T::IsDomainIntroduced => {
                self.require_privileged(conn)?;
                let domid = domid_arg(one_arg(payload)?)?;
                Ok(if self.is_domain_introduced(domid) {
                    b"T\0"
                } else {
                    b"F\0"
                }
                .to_vec())
            }
            T::Resume => {
                self.require_privileged(conn)?;
                let domid = domid_arg(one_arg(payload)?)?;
                if domid == 0 || domid >= DOMID_FIRST_RESERVED {
                    return Err(XsError::Inval);
                }
                if !self.is_domain_introduced(domid) {
                    return Err(XsError::NoEnt);
                }
                Ok(OK.to_vec())
            }
            T::SetTarget => {
                self.require_privileged(conn)?;
                match strings(payload)?.as_slice() {
                    [d, t] => {
                        let (d, t) = (domid_arg(d)?, domid_arg(t)?);
                        self.set_target(d, t).map(|()| OK.to_vec())
                    }
                    _ => Err(XsError::Inval),
                }
            }
            T::ResetWatches => {
                self.reset_conn(conn);
                Ok(OK.to_vec())
            }
            T::Control => {
                self.require_privileged(conn)?;
                self.control(&strings(payload)?)
            }
            T::Watch | T::WatchEvent | T::Error | T::Invalid => Err(XsError::NoSys),
        }
    }

    /// CONTROL (alias DEBUG) commands.
    fn control(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, XsError> {
        let (cmd, rest) = args.split_first().ok_or(XsError::Inval)?;
        match *cmd {
            b"help" => Ok(b"check\nhelp\nlog\nprint\nquota\n\0".to_vec()),
            b"check" | b"log" => Ok(OK.to_vec()),
            b"print" => {
                let text: Vec<String> = rest
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                log::info!("xenstore: {}", text.join(" "));
                Ok(OK.to_vec())
            }
            b"quota" => {
                let q = &self.quotas;
                let s = format!(
                    "nodes {}\nnode-size {}\nwatches {}\ntransactions {}\ntransaction-nodes {}\n\
                     outstanding {}\nmemory {}\nnode-permissions {}\npath-max {}\n\0",
                    q.nodes,
                    q.node_size,
                    q.watches,
                    q.transactions,
                    q.transaction_nodes,
                    q.outstanding,
                    q.memory,
                    q.perms_per_node,
                    q.path_max
                );
                Ok(s.into_bytes())
            }
            _ => Err(XsError::Inval),
        }
    }
}

fn perms_payload(perms: &[super::store::Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_string().as_bytes());
        out.push(0);
    }
    out
}
