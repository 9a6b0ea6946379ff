//! Watches: registration, matching and event delivery.
//!
//! A watch on `wpath` fires for a change of `wpath` or anything below it
//! (creation, value change, permission change, removal), and, when an
//! ancestor of `wpath` is removed recursively, with `wpath` itself as event
//! path. Registration fires once immediately. The watcher must be able to
//! read the changed node. `@introduceDomain` / `@releaseDomain` fire on
//! domain introduction / release; with a depth of 1 or more the event path
//! is `@releaseDomain/<domid>`, and a watch on `@releaseDomain/<domid>`
//! follows one domain.

use std::sync::mpsc::{SyncSender, TrySendError};

use super::quota::watch_cost;
use super::store::{canonical_path, depth_below, is_child, Caller, Change, ConnId, Store};
use super::wire::{encode_watch_event, text, XsError};

/// An event delivered to an in-process watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

#[derive(Debug)]
pub(crate) struct Watch {
    /// Absolute path, or `@special`.
    pub path: String,
    /// `/local/domain/<id>/` when registered with a relative path.
    pub relative_prefix: Option<String>,
    pub token: String,
    pub depth: Option<u32>,
    /// In-process watchers get events here instead of the connection queue.
    pub sink: Option<SyncSender<WatchEvent>>,
    pub cost: usize,
    pub dead: bool,
}

impl Watch {
    fn present(&self, abs: &str) -> String {
        match &self.relative_prefix {
            Some(prefix) => abs.strip_prefix(prefix.as_str()).unwrap_or(abs).to_owned(),
            None => abs.to_owned(),
        }
    }

    /// Event path for `change`, if this watch matches it.
    fn matches(&self, change: &Change) -> Option<String> {
        if self.path.starts_with('@') {
            return None;
        }
        if is_child(&change.path, &self.path) {
            if let Some(d) = self.depth {
                if depth_below(&change.path, &self.path) > d as usize {
                    return None;
                }
            }
            return Some(self.present(&change.path));
        }
        if change.recursive && is_child(&self.path, &change.path) {
            return Some(self.present(&self.path));
        }
        None
    }
}

impl Store {
    /// Register a watch for `conn`. Returns the event path of the initial
    /// event, which the caller delivers after the reply.
    pub(crate) fn add_watch(
        &mut self,
        conn: ConnId,
        raw_path: &[u8],
        token: &[u8],
        depth: Option<u32>,
        sink: Option<SyncSender<WatchEvent>>,
    ) -> Result<String, XsError> {
        let caller = self.caller(conn)?;
        let path = canonical_path(&caller, &self.quotas, raw_path, true)?;
        let token = text(token)?.to_owned();
        let relative = !raw_path.starts_with(b"/") && !raw_path.starts_with(b"@");
        let relative_prefix = relative.then(|| format!("{}/", caller.home()));
        let c = self.conns.get(&conn).ok_or(XsError::Inval)?;
        if c.watches.iter().any(|w| w.path == path && w.token == token) {
            return Err(XsError::Exist);
        }
        let cost = watch_cost(&path, &token);
        if !caller.privileged {
            let u = self.domain_usage(caller.domid);
            if u.watches >= self.quotas.watches {
                return Err(XsError::TooBig);
            }
            if u.memory().saturating_add(cost) > self.quotas.memory {
                return Err(XsError::NoMem);
            }
        }
        let w = Watch {
            path,
            relative_prefix,
            token,
            depth,
            sink,
            cost,
            dead: false,
        };
        let first = w.present(&w.path);
        let c = self.conns.get_mut(&conn).ok_or(XsError::Inval)?;
        c.watches.push(w);
        let u = self.acct.entry(caller.domid).or_default();
        u.watches = u.watches.saturating_add(1);
        u.watch_bytes = u.watch_bytes.saturating_add(cost);
        Ok(first)
    }

    pub(crate) fn remove_watch(
        &mut self,
        conn: ConnId,
        raw_path: &[u8],
        token: &[u8],
    ) -> Result<(), XsError> {
        let caller = self.caller(conn)?;
        let path = canonical_path(&caller, &self.quotas, raw_path, true)?;
        let token = text(token)?;
        let c = self.conns.get_mut(&conn).ok_or(XsError::Inval)?;
        let i = c
            .watches
            .iter()
            .position(|w| w.path == path && w.token == token)
            .ok_or(XsError::NoEnt)?;
        let w = c.watches.remove(i);
        self.uncharge_watch(caller.domid, w.cost);
        Ok(())
    }

    fn uncharge_watch(&mut self, domid: u32, cost: usize) {
        if let Some(u) = self.acct.get_mut(&domid) {
            u.watches = u.watches.saturating_sub(1);
            u.watch_bytes = u.watch_bytes.saturating_sub(cost);
        }
    }

    /// Drop every watch of `conn`.
    pub(crate) fn remove_all_watches(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let domid = c.domid;
        let watches = std::mem::take(&mut c.watches);
        for w in watches {
            self.uncharge_watch(domid, w.cost);
        }
    }

    /// Watch `path` from the monitor (domain 0). Events, including the
    /// immediate first one, go to `sink`; when it is full they are dropped
    /// (counted in [`Store::dropped_events`] of [`Store::LOCAL`]), and when
    /// its receiver is gone the watch is removed.
    pub fn watch(
        &mut self,
        path: &str,
        token: &str,
        sink: SyncSender<WatchEvent>,
    ) -> Result<(), XsError> {
        let first = self.add_watch(
            Store::LOCAL,
            path.as_bytes(),
            token.as_bytes(),
            None,
            Some(sink.clone()),
        )?;
        if sink
            .try_send(WatchEvent {
                path: first,
                token: token.to_owned(),
            })
            .is_err()
        {
            if let Some(c) = self.conns.get_mut(&Store::LOCAL) {
                c.queue.dropped = c.queue.dropped.saturating_add(1);
            }
        }
        Ok(())
    }

    /// [`Store::watch`] with a fresh channel of `capacity` events.
    pub fn watch_channel(
        &mut self,
        path: &str,
        token: &str,
        capacity: usize,
    ) -> Result<std::sync::mpsc::Receiver<WatchEvent>, XsError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        self.watch(path, token, tx)?;
        Ok(rx)
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), XsError> {
        self.remove_watch(Store::LOCAL, path.as_bytes(), token.as_bytes())
    }

    fn conn_caller(&self, domid: u32, privileged: bool) -> Caller {
        Caller {
            domid,
            privileged: privileged || domid == 0,
            target: self.domains.get(&domid).and_then(|d| d.target),
        }
    }

    /// Deliver the watch events for `changes`.
    pub(crate) fn fire_changes(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let callers: Vec<(ConnId, Caller)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.alive && !c.watches.is_empty())
            .map(|(id, c)| (*id, self.conn_caller(c.domid, c.privileged)))
            .collect();
        for (id, caller) in callers {
            let limit = self.event_limit(&caller);
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let mut notify = false;
            for change in changes {
                if !caller.rights(&change.perms).read {
                    continue;
                }
                for w in c.watches.iter_mut() {
                    if let Some(epath) = w.matches(change) {
                        notify |= deliver(w, &mut c.queue, epath, limit);
                    }
                }
            }
            c.watches.retain(|w| !w.dead);
            if notify {
                c.queue.notify();
            }
        }
    }

    /// Fire `@introduceDomain` or `@releaseDomain` for `domid`.
    pub(crate) fn fire_special(&mut self, name: &str, domid: u32) {
        let perms = self.special_perms.get(name).cloned().unwrap_or_default();
        let one = format!("{name}/{domid}");
        let callers: Vec<(ConnId, Caller)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.alive && !c.watches.is_empty())
            .map(|(id, c)| (*id, self.conn_caller(c.domid, c.privileged)))
            .collect();
        for (id, caller) in callers {
            if !caller.rights(&perms).read {
                continue;
            }
            let limit = self.event_limit(&caller);
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let mut notify = false;
            for w in c.watches.iter_mut() {
                let epath = if w.path == name {
                    if w.depth.is_some_and(|d| d >= 1) {
                        one.clone()
                    } else {
                        name.to_owned()
                    }
                } else if w.path == one {
                    one.clone()
                } else {
                    continue;
                };
                notify |= deliver(w, &mut c.queue, epath, limit);
            }
            c.watches.retain(|w| !w.dead);
            if notify {
                c.queue.notify();
            }
        }
    }

    pub(crate) fn event_limit(&self, caller: &Caller) -> usize {
        if caller.privileged {
            self.quotas.queued_events_privileged
        } else {
            self.quotas.queued_events
        }
    }
}

/// Send one event for watch `w`; returns whether the connection queue grew.
fn deliver(w: &mut Watch, queue: &mut super::conn::OutQueue, epath: String, limit: usize) -> bool {
    match &w.sink {
        Some(sink) => {
            match sink.try_send(WatchEvent {
                path: epath,
                token: w.token.clone(),
            }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => queue.dropped = queue.dropped.saturating_add(1),
                Err(TrySendError::Disconnected(_)) => w.dead = true,
            }
            false
        }
        None => queue.push_event(encode_watch_event(&epath, &w.token), limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    fn drain(rx: &std::sync::mpsc::Receiver<WatchEvent>) -> Vec<String> {
        rx.try_iter().map(|e| e.path).collect()
    }

    #[test]
    fn local_watch_fires() {
        let mut s = Store::new();
        let (tx, rx) = sync_channel(64);
        s.watch("/w", "tok", tx).unwrap();
        let first = rx.try_recv().unwrap();
        assert_eq!(
            first,
            WatchEvent {
                path: "/w".into(),
                token: "tok".into()
            }
        );
        s.write("/w/a", "1").unwrap();
        s.write("/other", "1").unwrap();
        s.write("/wx", "1").unwrap();
        s.mkdir("/w/a").unwrap(); // exists: no event
        s.set_perms(
            "/w/a",
            &[crate::xenstore::Perm::new(crate::xenstore::Access::Read, 0)],
        )
        .unwrap();
        assert_eq!(drain(&rx), vec!["/w/a", "/w/a"]);
        s.write("/w/b/c", "1").unwrap();
        s.rm("/w").unwrap();
        let ev = drain(&rx);
        assert_eq!(ev[0], "/w/b/c");
        // One event per removed node, root included.
        for p in ["/w", "/w/a", "/w/b", "/w/b/c"] {
            assert!(ev.iter().any(|e| e == p), "{p} in {ev:?}");
        }
        s.unwatch("/w", "tok").unwrap();
        assert_eq!(s.unwatch("/w", "tok"), Err(XsError::NoEnt));
        s.write("/w", "1").unwrap();
        assert!(drain(&rx).is_empty());
    }

    #[test]
    fn parent_removal_reports_watch_path() {
        let mut s = Store::new();
        s.write("/p/q/r", "1").unwrap();
        let (tx, rx) = sync_channel(64);
        s.watch("/p/q/r/deeper", "t", tx).unwrap();
        drain(&rx);
        s.rm("/p").unwrap();
        assert_eq!(drain(&rx), vec!["/p/q/r/deeper"]);
    }

    #[test]
    fn duplicate_watch_is_eexist() {
        let mut s = Store::new();
        let (tx, _rx) = sync_channel(4);
        s.watch("/a", "t", tx.clone()).unwrap();
        assert_eq!(s.watch("/a", "t", tx.clone()), Err(XsError::Exist));
        s.watch("/a", "t2", tx).unwrap();
    }

    #[test]
    fn full_sink_drops_and_dead_sink_unregisters() {
        let mut s = Store::new();
        let (tx, rx) = sync_channel(1);
        s.watch("/a", "t", tx).unwrap();
        s.write("/a", "1").unwrap(); // dropped: channel holds the first event
        assert_eq!(s.dropped_events(Store::LOCAL), 1);
        drop(rx);
        s.write("/a", "2").unwrap();
        assert!(s.conns[&Store::LOCAL].watches.is_empty());
    }

    #[test]
    fn special_watches() {
        let mut s = Store::new();
        let (tx, rx) = sync_channel(16);
        s.watch("@introduceDomain", "i", tx.clone()).unwrap();
        s.watch("@releaseDomain", "r", tx.clone()).unwrap();
        s.watch("@releaseDomain/7", "r7", tx).unwrap();
        drain(&rx);
        s.introduce_domain(7, 0x1234, 3).unwrap();
        s.introduce_domain(7, 0x1234, 3).unwrap(); // rebinding: no second event
        s.introduce_domain(8, 0x1234, 3).unwrap();
        assert_eq!(drain(&rx), vec!["@introduceDomain", "@introduceDomain"]);
        s.release_domain(7).unwrap();
        let mut ev: Vec<(String, String)> = rx.try_iter().map(|e| (e.path, e.token)).collect();
        ev.sort();
        assert_eq!(
            ev,
            vec![
                ("@releaseDomain".into(), "r".into()),
                ("@releaseDomain/7".into(), "r7".into())
            ]
        );
        assert_eq!(s.release_domain(7), Err(XsError::NoEnt));
        assert_eq!(s.introduce_domain(0, 1, 1), Err(XsError::Inval));
    }
}
