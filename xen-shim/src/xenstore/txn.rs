//! Transactions: a per-node overlay with generation-based conflict checks.
//!
//! The first access to a node inside a transaction copies it (or records its
//! absence) together with its generation. Reads and writes then use the
//! copy. At commit every accessed node's live generation is compared with the
//! recorded one; any difference means somebody else changed it and the commit
//! fails with EAGAIN (the client starts over). Watches fire only on commit.

use std::collections::{BTreeMap, HashMap};

use super::quota::Quotas;
use super::quota::OBJ_OVERHEAD;
use super::store::{
    exec, quota_ok, Accounts, Caller, Change, ConnId, Node, Op, OpOut, Store, Tree, View,
};
use super::wire::XsError;

#[derive(Debug)]
pub(crate) struct TxEntry {
    /// Live generation at first access; `None` if the node did not exist.
    pub base_gen: Option<u64>,
    /// The node as the transaction sees it; `None` if absent.
    pub node: Option<Node>,
    pub dirty: bool,
    /// Bytes charged for this entry.
    pub charged: usize,
}

#[derive(Debug)]
pub(crate) struct Txn {
    pub conn: ConnId,
    pub domid: u32,
    pub entries: HashMap<String, TxEntry>,
    /// Changes to fire at commit, one per path.
    pub changes: BTreeMap<String, Change>,
    /// Net nodes owned by `domid` this transaction adds.
    pub node_delta: isize,
    /// Bytes charged to `domid` for this transaction.
    pub charged: usize,
}

impl Txn {
    fn new(conn: ConnId, domid: u32) -> Txn {
        Txn {
            conn,
            domid,
            entries: HashMap::new(),
            changes: BTreeMap::new(),
            node_delta: 0,
            charged: OBJ_OVERHEAD,
        }
    }
}

fn entry_cost(path: &str, node: Option<&Node>) -> usize {
    OBJ_OVERHEAD
        .saturating_add(path.len())
        .saturating_add(node.map_or(0, |n| n.cost(path)))
}

/// Node access inside a transaction.
pub(crate) struct TxnView<'a> {
    pub tree: &'a Tree,
    pub txn: &'a mut Txn,
    pub acct: &'a mut Accounts,
    pub quotas: &'a Quotas,
    /// Whether the per-transaction node limit applies.
    pub limited: bool,
}

impl TxnView<'_> {
    fn charge(&mut self, old: usize, new: usize) {
        let u = self.acct.entry(self.txn.domid).or_default();
        u.transaction_bytes = u.transaction_bytes.saturating_sub(old).saturating_add(new);
        self.txn.charged = self.txn.charged.saturating_sub(old).saturating_add(new);
    }

    /// Make sure `path` has an entry (recording the live state).
    fn touch(&mut self, path: &str) -> Result<(), XsError> {
        if self.txn.entries.contains_key(path) {
            return Ok(());
        }
        if self.limited && self.txn.entries.len() >= self.quotas.transaction_nodes {
            return Err(XsError::NoSpc);
        }
        let live = self.tree.nodes.get(path);
        let cost = entry_cost(path, live);
        self.txn.entries.insert(
            path.to_owned(),
            TxEntry {
                base_gen: live.map(|n| n.gen),
                node: live.cloned(),
                dirty: false,
                charged: cost,
            },
        );
        self.charge(0, cost);
        Ok(())
    }

    fn replace(&mut self, path: &str, node: Option<Node>) -> Result<(), XsError> {
        self.touch(path)?;
        let dom = self.txn.domid;
        let new_cost = entry_cost(path, node.as_ref());
        let Some(e) = self.txn.entries.get_mut(path) else {
            return Err(XsError::Io);
        };
        let owned = |n: &Option<Node>| isize::from(n.as_ref().is_some_and(|n| n.owner() == dom));
        let delta = owned(&node) - owned(&e.node);
        let old_cost = e.charged;
        e.node = node;
        e.dirty = true;
        e.charged = new_cost;
        self.txn.node_delta = self.txn.node_delta.saturating_add(delta);
        self.charge(old_cost, new_cost);
        Ok(())
    }
}

impl View for TxnView<'_> {
    fn get(&mut self, path: &str) -> Result<Option<Node>, XsError> {
        self.touch(path)?;
        Ok(self.txn.entries.get(path).and_then(|e| e.node.clone()))
    }
    fn put(&mut self, path: &str, node: Node) -> Result<(), XsError> {
        self.replace(path, Some(node))
    }
    fn del(&mut self, path: &str) -> Result<(), XsError> {
        self.replace(path, None)
    }
    fn check_quota(&self, caller: &Caller, nodes: usize, bytes: usize) -> Result<(), XsError> {
        if caller.privileged {
            return Ok(());
        }
        let usage = self.acct.get(&caller.domid).copied().unwrap_or_default();
        quota_ok(self.quotas, usage, self.txn.node_delta, nodes, bytes)
    }
}

impl Store {
    pub(crate) fn txn_start(&mut self, conn: ConnId) -> Result<u32, XsError> {
        let caller = self.caller(conn)?;
        let usage = self.domain_usage(caller.domid);
        if !caller.privileged {
            if usage.transactions >= self.quotas.transactions {
                return Err(XsError::NoSpc);
            }
            if usage.memory().saturating_add(OBJ_OVERHEAD) > self.quotas.memory {
                return Err(XsError::NoMem);
            }
        }
        let mut id = self.next_txid;
        while id == 0 || self.txns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_txid = id.wrapping_add(1);
        let txn = Txn::new(conn, caller.domid);
        let u = self.acct.entry(caller.domid).or_default();
        u.transactions = u.transactions.saturating_add(1);
        u.transaction_bytes = u.transaction_bytes.saturating_add(txn.charged);
        self.txns.insert(id, txn);
        Ok(id)
    }

    /// Remove a transaction and give back what it was charged.
    fn take_txn(&mut self, conn: ConnId, id: u32) -> Result<Txn, XsError> {
        match self.txns.get(&id) {
            Some(t) if t.conn == conn => {}
            _ => return Err(XsError::NoEnt),
        }
        let txn = self.txns.remove(&id).ok_or(XsError::NoEnt)?;
        if let Some(u) = self.acct.get_mut(&txn.domid) {
            u.transactions = u.transactions.saturating_sub(1);
            u.transaction_bytes = u.transaction_bytes.saturating_sub(txn.charged);
        }
        Ok(txn)
    }

    /// Drop every transaction of `conn`.
    pub(crate) fn abort_all_txns(&mut self, conn: ConnId) {
        let ids: Vec<u32> = self
            .txns
            .iter()
            .filter(|(_, t)| t.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let _ = self.take_txn(conn, id);
        }
    }

    pub(crate) fn txn_end(&mut self, conn: ConnId, id: u32, commit: bool) -> Result<(), XsError> {
        let caller = self.caller(conn)?;
        let txn = self.take_txn(conn, id)?;
        if !commit {
            return Ok(());
        }
        for (p, e) in &txn.entries {
            if self.tree.nodes.get(p).map(|n| n.gen) != e.base_gen {
                return Err(XsError::Again);
            }
        }
        if !caller.privileged {
            let dom = caller.domid;
            let (mut nodes, mut bytes_add, mut bytes_sub) = (0isize, 0usize, 0usize);
            for (p, e) in txn.entries.iter().filter(|(_, e)| e.dirty) {
                let old = self.tree.nodes.get(p).filter(|n| n.owner() == dom);
                let new = e.node.as_ref().filter(|n| n.owner() == dom);
                nodes += isize::from(new.is_some()) - isize::from(old.is_some());
                bytes_add = bytes_add.saturating_add(new.map_or(0, |n| n.cost(p)));
                bytes_sub = bytes_sub.saturating_add(old.map_or(0, |n| n.cost(p)));
            }
            let usage = self.domain_usage(dom);
            let bytes = bytes_add.saturating_sub(bytes_sub);
            quota_ok(
                &self.quotas,
                usage,
                0,
                usize::try_from(nodes).unwrap_or(0),
                bytes,
            )?;
        }
        let mut dirty: Vec<(String, TxEntry)> =
            txn.entries.into_iter().filter(|(_, e)| e.dirty).collect();
        dirty.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, e) in dirty {
            match e.node {
                Some(n) => self.tree.put(&mut self.acct, &p, n),
                None => {
                    self.tree.del(&mut self.acct, &p);
                }
            }
        }
        let changes: Vec<Change> = txn
            .changes
            .into_values()
            .map(|mut c| {
                if let Some(n) = self.tree.nodes.get(&c.path) {
                    c.perms = n.perms.clone();
                }
                c
            })
            .collect();
        self.fire_changes(&changes);
        Ok(())
    }

    pub(crate) fn run_txn_op(
        &mut self,
        conn: ConnId,
        caller: Caller,
        id: u32,
        op: &Op<'_>,
    ) -> Result<OpOut, XsError> {
        let txn = match self.txns.get_mut(&id) {
            Some(t) if t.conn == conn => t,
            _ => return Err(XsError::NoEnt),
        };
        let mut changes = Vec::new();
        let out = {
            let mut v = TxnView {
                tree: &self.tree,
                txn,
                acct: &mut self.acct,
                quotas: &self.quotas,
                limited: !caller.privileged,
            };
            exec(&mut v, &caller, &self.quotas, op, &mut changes)
        };
        if let Some(txn) = self.txns.get_mut(&id) {
            for c in changes {
                match txn.changes.get_mut(&c.path) {
                    Some(old) => {
                        old.recursive |= c.recursive;
                        old.perms = c.perms;
                    }
                    None => {
                        txn.changes.insert(c.path.clone(), c);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_applies_and_isolates() {
        let mut s = Store::new();
        s.write("/a", "1").unwrap();
        let t = s.transaction_start().unwrap();
        s.tx_write(t, "/a", "2").unwrap();
        s.tx_write(t, "/b/c", "3").unwrap();
        assert_eq!(s.read("/a").unwrap(), b"1", "not visible before commit");
        assert!(!s.exists("/b"));
        assert_eq!(s.tx_read(t, "/a").unwrap(), b"2");
        assert_eq!(s.tx_directory(t, "/b").unwrap(), vec!["c"]);
        s.transaction_end(t, true).unwrap();
        assert_eq!(s.read("/a").unwrap(), b"2");
        assert_eq!(s.read("/b/c").unwrap(), b"3");
        assert!(s.directory("/").unwrap().contains(&"b".to_string()));
    }

    #[test]
    fn abort_discards() {
        let mut s = Store::new();
        let t = s.transaction_start().unwrap();
        s.tx_write(t, "/x", "1").unwrap();
        s.transaction_end(t, false).unwrap();
        assert!(!s.exists("/x"));
        assert_eq!(s.transaction_end(t, true), Err(XsError::NoEnt));
        assert_eq!(s.tx_read(t, "/x"), Err(XsError::NoEnt));
    }

    #[test]
    fn conflict_on_read_node_changed() {
        let mut s = Store::new();
        s.write("/a", "1").unwrap();
        let t = s.transaction_start().unwrap();
        assert_eq!(s.tx_read(t, "/a").unwrap(), b"1");
        s.write("/a", "other").unwrap();
        assert_eq!(s.tx_read(t, "/a").unwrap(), b"1", "snapshot");
        s.tx_write(t, "/z", "1").unwrap();
        assert_eq!(s.transaction_end(t, true), Err(XsError::Again));
        assert!(!s.exists("/z"));
        assert_eq!(s.read("/a").unwrap(), b"other");
    }

    #[test]
    fn conflict_on_absent_node_created() {
        let mut s = Store::new();
        let t = s.transaction_start().unwrap();
        assert_eq!(s.tx_read(t, "/n"), Err(XsError::NoEnt));
        s.write("/n", "x").unwrap();
        assert_eq!(s.transaction_end(t, true), Err(XsError::Again));
    }

    #[test]
    fn two_transactions_same_node() {
        let mut s = Store::new();
        s.write("/c", "0").unwrap();
        let t1 = s.transaction_start().unwrap();
        let t2 = s.transaction_start().unwrap();
        s.tx_write(t1, "/c", "1").unwrap();
        s.tx_write(t2, "/c", "2").unwrap();
        s.transaction_end(t1, true).unwrap();
        assert_eq!(s.transaction_end(t2, true), Err(XsError::Again));
        assert_eq!(s.read("/c").unwrap(), b"1");
    }

    #[test]
    fn unrelated_transactions_both_commit() {
        let mut s = Store::new();
        s.write("/p/a", "0").unwrap();
        s.write("/q/b", "0").unwrap();
        let t1 = s.transaction_start().unwrap();
        let t2 = s.transaction_start().unwrap();
        s.tx_write(t1, "/p/a", "1").unwrap();
        s.tx_write(t2, "/q/b", "2").unwrap();
        s.transaction_end(t1, true).unwrap();
        s.transaction_end(t2, true).unwrap();
        assert_eq!(s.read("/p/a").unwrap(), b"1");
        assert_eq!(s.read("/q/b").unwrap(), b"2");
    }

    #[test]
    fn rm_in_transaction() {
        let mut s = Store::new();
        s.write("/t/a/b", "1").unwrap();
        s.write("/t/c", "1").unwrap();
        let t = s.transaction_start().unwrap();
        s.tx_rm(t, "/t/a").unwrap();
        assert_eq!(s.tx_read(t, "/t/a/b"), Err(XsError::NoEnt));
        assert!(s.exists("/t/a/b"));
        s.transaction_end(t, true).unwrap();
        assert!(!s.exists("/t/a"));
        assert!(!s.exists("/t/a/b"));
        assert_eq!(s.directory("/t").unwrap(), vec!["c"]);
    }
}
