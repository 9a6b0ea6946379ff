//! The node tree, permissions, paths and the store operations.
//!
//! Operations are written once against the [`View`] trait and run either on
//! the live tree ([`LiveView`]) or inside a transaction
//! ([`super::txn::TxnView`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::conn::Conn;
use super::quota::{node_cost, DomainUsage, Quotas};
use super::txn::Txn;
use super::wire::{self, XsError, ABS_PATH_MAX, PAYLOAD_MAX};

/// Handle of one client connection of the store (socket client, guest
/// ring, or the in-process API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

/// Handle of an open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

/// First domid that is not a real domain (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// The special watch paths.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Access letter of a permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`
    None,
    /// `r`
    Read,
    /// `w`
    Write,
    /// `b`
    Both,
}

impl Access {
    pub fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
    pub fn from_letter(c: u8) -> Option<Access> {
        Some(match c {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        })
    }
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }
}

/// One permission entry, e.g. `r5`. The first entry of a node's list names
/// the owner, and its letter is the access of every domain not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    pub access: Access,
    pub domid: u32,
}

impl Perm {
    pub const fn new(access: Access, domid: u32) -> Perm {
        Perm { access, domid }
    }

    /// Parse `<letter><domid>`.
    pub fn parse(s: &[u8]) -> Result<Perm, XsError> {
        let (&letter, num) = s.split_first().ok_or(XsError::Inval)?;
        let access = Access::from_letter(letter).ok_or(XsError::Inval)?;
        let domid = wire::number(num)?;
        let domid = u32::try_from(domid).map_err(|_| XsError::Inval)?;
        if domid > 0xffff {
            return Err(XsError::Inval);
        }
        Ok(Perm { access, domid })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// Parse a whole permission list as `xenstore-chmod` would give it, e.g.
/// `["n5", "r0"]`.
pub fn parse_perms<S: AsRef<[u8]>>(list: &[S]) -> Result<Vec<Perm>, XsError> {
    if list.is_empty() {
        return Err(XsError::Inval);
    }
    list.iter().map(|s| Perm::parse(s.as_ref())).collect()
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    /// Never empty.
    pub perms: Vec<Perm>,
    /// Leaf names in creation order.
    pub children: Vec<String>,
    /// Generation: changes whenever the node (value, perms, children) does.
    pub gen: u64,
}

impl Node {
    pub fn new(value: Vec<u8>, perms: Vec<Perm>) -> Node {
        Node {
            value,
            perms,
            children: Vec::new(),
            gen: 0,
        }
    }

    pub fn owner(&self) -> u32 {
        self.perms.first().map_or(0, |p| p.domid)
    }

    /// Size as limited by [`Quotas::node_size`].
    pub fn size(&self) -> usize {
        let children: usize = self.children.iter().map(|c| c.len() + 1).sum();
        self.value
            .len()
            .saturating_add(children)
            .saturating_add(self.perms.len().saturating_mul(4))
    }

    pub fn cost(&self, path: &str) -> usize {
        node_cost(path, self.value.len(), self.perms.len())
    }
}

/// Who performs an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    pub domid: u32,
    pub privileged: bool,
    /// Domain this one acts for (SET_TARGET), e.g. a device-model stubdom.
    pub target: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Rights {
    pub read: bool,
    pub write: bool,
    pub owner: bool,
}

impl Caller {
    pub const DOM0: Caller = Caller {
        domid: 0,
        privileged: true,
        target: None,
    };

    fn is(&self, domid: u32) -> bool {
        self.domid == domid || self.target == Some(domid)
    }

    pub fn rights(&self, perms: &[Perm]) -> Rights {
        const ALL: Rights = Rights {
            read: true,
            write: true,
            owner: true,
        };
        if self.privileged {
            return ALL;
        }
        let Some((owner, rest)) = perms.split_first() else {
            return Rights::default();
        };
        if self.is(owner.domid) {
            return ALL;
        }
        let access = rest
            .iter()
            .find(|p| p.domid == self.domid)
            .or_else(|| rest.iter().find(|p| Some(p.domid) == self.target))
            .map_or(owner.access, |p| p.access);
        Rights {
            read: access.can_read(),
            write: access.can_write(),
            owner: false,
        }
    }

    pub fn home(&self) -> String {
        domain_path(self.domid)
    }
}

/// `/local/domain/<domid>`.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

/// Whether `path` is `parent` or below it.
pub(crate) fn is_child(path: &str, parent: &str) -> bool {
    if parent == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(parent) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}

/// Levels of `path` below `parent` (which it must be a child of).
pub(crate) fn depth_below(path: &str, parent: &str) -> usize {
    let rest = if parent == "/" {
        path
    } else {
        path.get(parent.len()..).unwrap_or("")
    };
    rest.split('/').filter(|s| !s.is_empty()).count()
}

pub(crate) fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

pub(crate) fn basename(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Length of a `/local/domain/<digits>/` prefix of `path`, or 0.
fn home_prefix_len(path: &str) -> usize {
    let Some(rest) = path.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    "/local/domain/".len() + digits + 1
}

/// Turn a path from a request into a validated absolute path (or an
/// `@special` one when `allow_special`).
pub(crate) fn canonical_path(
    caller: &Caller,
    quotas: &Quotas,
    raw: &[u8],
    allow_special: bool,
) -> Result<String, XsError> {
    let s = wire::text(raw)?;
    let abs = if s.starts_with('/') || (allow_special && s.starts_with('@')) {
        s.to_owned()
    } else if s.is_empty() || s.starts_with('@') {
        return Err(XsError::Inval);
    } else {
        format!("{}/{}", caller.home(), s)
    };
    let valid_chars = abs
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@'));
    if !valid_chars
        || abs.len() > ABS_PATH_MAX
        || (abs.len() > 1 && abs.ends_with('/'))
        || abs.contains("//")
        || (abs.starts_with('@') && abs.len() == 1)
    {
        return Err(XsError::Inval);
    }
    if !caller.privileged && abs.len() - home_prefix_len(&abs) > quotas.path_max {
        return Err(XsError::Inval);
    }
    Ok(abs)
}

/// A change that may fire watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub path: String,
    /// Permissions deciding who may see the event (the node's, or its last
    /// ones if it was deleted).
    pub perms: Vec<Perm>,
    /// A recursive removal: watches *below* `path` fire too, with their own
    /// path as event path.
    pub recursive: bool,
}

/// The node tree with its generation counter.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    pub nodes: HashMap<String, Node>,
    pub gen: u64,
}

pub(crate) type Accounts = HashMap<u32, DomainUsage>;

impl Tree {
    /// Store `node` at `path` with a fresh generation, keeping the owners'
    /// accounts right. No checks.
    pub fn put(&mut self, acct: &mut Accounts, path: &str, mut node: Node) {
        self.gen = self.gen.wrapping_add(1);
        node.gen = self.gen;
        let (owner, cost) = (node.owner(), node.cost(path));
        if let Some(old) = self.nodes.insert(path.to_owned(), node) {
            uncharge(acct, old.owner(), old.cost(path));
        }
        let u = acct.entry(owner).or_default();
        u.nodes = u.nodes.saturating_add(1);
        u.node_bytes = u.node_bytes.saturating_add(cost);
    }

    pub fn del(&mut self, acct: &mut Accounts, path: &str) -> Option<Node> {
        let old = self.nodes.remove(path)?;
        self.gen = self.gen.wrapping_add(1);
        uncharge(acct, old.owner(), old.cost(path));
        Some(old)
    }
}

fn uncharge(acct: &mut Accounts, owner: u32, cost: usize) {
    if let Some(u) = acct.get_mut(&owner) {
        u.nodes = u.nodes.saturating_sub(1);
        u.node_bytes = u.node_bytes.saturating_sub(cost);
    }
}

/// Node access for the operations: live tree or transaction.
pub(crate) trait View {
    /// Read a node (a transaction records the access).
    fn get(&mut self, path: &str) -> Result<Option<Node>, XsError>;
    fn put(&mut self, path: &str, node: Node) -> Result<(), XsError>;
    fn del(&mut self, path: &str) -> Result<(), XsError>;
    /// Fail if `caller` may not grow by `nodes` nodes and `bytes` bytes.
    fn check_quota(&self, caller: &Caller, nodes: usize, bytes: usize) -> Result<(), XsError>;
}

/// Quota check shared by both views.
pub(crate) fn quota_ok(
    quotas: &Quotas,
    usage: DomainUsage,
    extra_nodes: isize,
    nodes: usize,
    bytes: usize,
) -> Result<(), XsError> {
    if nodes > 0 {
        let now = usage.nodes.saturating_add_signed(extra_nodes);
        if now.saturating_add(nodes) > quotas.nodes {
            return Err(XsError::NoSpc);
        }
    }
    if bytes > 0 && usage.memory().saturating_add(bytes) > quotas.memory {
        return Err(XsError::NoMem);
    }
    Ok(())
}

/// The live tree.
pub(crate) struct LiveView<'a> {
    pub tree: &'a mut Tree,
    pub acct: &'a mut Accounts,
    pub quotas: &'a Quotas,
}

impl View for LiveView<'_> {
    fn get(&mut self, path: &str) -> Result<Option<Node>, XsError> {
        Ok(self.tree.nodes.get(path).cloned())
    }
    fn put(&mut self, path: &str, node: Node) -> Result<(), XsError> {
        self.tree.put(self.acct, path, node);
        Ok(())
    }
    fn del(&mut self, path: &str) -> Result<(), XsError> {
        self.tree.del(self.acct, path);
        Ok(())
    }
    fn check_quota(&self, caller: &Caller, nodes: usize, bytes: usize) -> Result<(), XsError> {
        if caller.privileged {
            return Ok(());
        }
        let usage = self.acct.get(&caller.domid).copied().unwrap_or_default();
        quota_ok(self.quotas, usage, 0, nodes, bytes)
    }
}

/// A tree operation with its (raw, unvalidated) arguments.
#[derive(Debug, Clone)]
pub(crate) enum Op<'a> {
    Read(&'a [u8]),
    Write(&'a [u8], &'a [u8]),
    Mkdir(&'a [u8]),
    Rm(&'a [u8]),
    Directory(&'a [u8]),
    DirectoryPart(&'a [u8], u64),
    GetPerms(&'a [u8]),
    SetPerms(&'a [u8], Vec<Perm>),
}

/// Result of an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpOut {
    Value(Vec<u8>),
    Names(Vec<String>),
    /// A DIRECTORY_PART reply payload.
    Raw(Vec<u8>),
    Perms(Vec<Perm>),
    Done,
}

#[derive(Clone, Copy)]
enum Need {
    Read,
    Write,
}

fn allowed(caller: &Caller, perms: &[Perm], need: Need) -> bool {
    let r = caller.rights(perms);
    match need {
        Need::Read => r.read,
        Need::Write => r.write,
    }
}

/// The errno for a missing node: EACCES when the nearest existing ancestor
/// does not grant `need`, so existence is not revealed; ENOENT otherwise.
fn errno_from_parents<V: View>(v: &mut V, caller: &Caller, path: &str, need: Need) -> XsError {
    let mut cur = path;
    while let Some(p) = parent_of(cur) {
        match v.get(p) {
            Ok(Some(n)) => {
                return if allowed(caller, &n.perms, need) {
                    XsError::NoEnt
                } else {
                    XsError::Acces
                };
            }
            Ok(None) => cur = p,
            Err(e) => return e,
        }
    }
    XsError::NoEnt
}

fn get_checked<V: View>(
    v: &mut V,
    caller: &Caller,
    path: &str,
    need: Need,
) -> Result<Node, XsError> {
    match v.get(path)? {
        Some(n) if allowed(caller, &n.perms, need) => Ok(n),
        Some(_) => Err(XsError::Acces),
        None => Err(errno_from_parents(v, caller, path, need)),
    }
}

fn owned_cost(caller: &Caller, path: &str, node: &Node) -> usize {
    if node.owner() == caller.domid {
        node.cost(path)
    } else {
        0
    }
}

/// Create `path` (which does not exist) and its missing parents.
fn create<V: View>(
    v: &mut V,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    value: &[u8],
) -> Result<(), XsError> {
    // Find the nearest existing ancestor.
    let mut missing: Vec<&str> = vec![path];
    let mut cur = path;
    let (anc_path, mut anc) = loop {
        let p = parent_of(cur).ok_or(XsError::Inval)?;
        match v.get(p)? {
            Some(n) => break (p, n),
            None => {
                missing.push(p);
                cur = p;
            }
        }
    };
    if !caller.rights(&anc.perms).write {
        return Err(XsError::Acces);
    }
    let mut perms = anc.perms.clone();
    if !caller.privileged {
        if let Some(owner) = perms.first_mut() {
            owner.domid = caller.domid;
        }
    }
    missing.reverse();
    let first = missing.first().copied().ok_or(XsError::Inval)?;
    anc.children.push(basename(first).to_owned());

    // Build the new nodes, then check everything before changing anything.
    let mut new_nodes: Vec<(&str, Node)> = Vec::with_capacity(missing.len());
    for (i, p) in missing.iter().enumerate() {
        let is_last = i + 1 == missing.len();
        let mut n = Node::new(
            if is_last { value.to_vec() } else { Vec::new() },
            perms.clone(),
        );
        if let Some(next) = missing.get(i + 1) {
            n.children.push(basename(next).to_owned());
        }
        new_nodes.push((p, n));
    }
    if !caller.privileged {
        if anc.size() > quotas.node_size
            || new_nodes.iter().any(|(_, n)| n.size() > quotas.node_size)
        {
            return Err(XsError::NoSpc);
        }
        let bytes: usize = new_nodes
            .iter()
            .map(|(p, n)| owned_cost(caller, p, n))
            .sum();
        v.check_quota(caller, new_nodes.len(), bytes)?;
    }
    v.put(anc_path, anc)?;
    for (p, n) in new_nodes {
        v.put(p, n)?;
    }
    Ok(())
}

/// Paths of `root` and everything below it, parents first.
fn subtree<V: View>(
    v: &mut V,
    root: &str,
    root_node: &Node,
) -> Result<Vec<(String, Vec<Perm>)>, XsError> {
    let mut out = vec![(root.to_owned(), root_node.perms.clone())];
    let mut stack: Vec<String> = root_node.children.iter().map(|c| join(root, c)).collect();
    while let Some(p) = stack.pop() {
        if let Some(n) = v.get(&p)? {
            stack.extend(n.children.iter().map(|c| join(&p, c)));
            out.push((p, n.perms));
        }
    }
    Ok(out)
}

/// Remove `path` (which exists) with its subtree. Returns the changes.
pub(crate) fn remove_subtree<V: View>(
    v: &mut V,
    path: &str,
    node: &Node,
) -> Result<Vec<Change>, XsError> {
    let all = subtree(v, path, node)?;
    if let Some(pp) = parent_of(path) {
        if let Some(mut parent) = v.get(pp)? {
            let name = basename(path);
            parent.children.retain(|c| c != name);
            v.put(pp, parent)?;
        }
    }
    let mut changes = Vec::with_capacity(all.len());
    for (i, (p, perms)) in all.into_iter().enumerate() {
        v.del(&p)?;
        changes.push(Change {
            path: p,
            perms,
            recursive: i == 0,
        });
    }
    Ok(changes)
}

/// Run `op` for `caller` on `v`, appending watch-firing changes.
pub(crate) fn exec<V: View>(
    v: &mut V,
    caller: &Caller,
    quotas: &Quotas,
    op: &Op<'_>,
    changes: &mut Vec<Change>,
) -> Result<OpOut, XsError> {
    let path_of = |raw: &[u8]| canonical_path(caller, quotas, raw, false);
    match *op {
        Op::Read(p) => {
            let path = path_of(p)?;
            Ok(OpOut::Value(
                get_checked(v, caller, &path, Need::Read)?.value,
            ))
        }
        Op::Write(p, value) => {
            let path = path_of(p)?;
            match v.get(&path)? {
                Some(mut n) => {
                    if !caller.rights(&n.perms).write {
                        return Err(XsError::Acces);
                    }
                    let old_cost = owned_cost(caller, &path, &n);
                    n.value = value.to_vec();
                    if !caller.privileged {
                        if n.size() > quotas.node_size {
                            return Err(XsError::NoSpc);
                        }
                        let new_cost = owned_cost(caller, &path, &n);
                        v.check_quota(caller, 0, new_cost.saturating_sub(old_cost))?;
                    }
                    let perms = n.perms.clone();
                    v.put(&path, n)?;
                    changes.push(Change {
                        path,
                        perms,
                        recursive: false,
                    });
                }
                None => {
                    let e = errno_from_parents(v, caller, &path, Need::Write);
                    if e != XsError::NoEnt {
                        return Err(e);
                    }
                    create(v, caller, quotas, &path, value)?;
                    let perms = v.get(&path)?.map(|n| n.perms).unwrap_or_default();
                    changes.push(Change {
                        path,
                        perms,
                        recursive: false,
                    });
                }
            }
            Ok(OpOut::Done)
        }
        Op::Mkdir(p) => {
            let path = path_of(p)?;
            match v.get(&path)? {
                Some(n) if caller.rights(&n.perms).write => {}
                Some(_) => return Err(XsError::Acces),
                None => {
                    let e = errno_from_parents(v, caller, &path, Need::Write);
                    if e != XsError::NoEnt {
                        return Err(e);
                    }
                    create(v, caller, quotas, &path, b"")?;
                    let perms = v.get(&path)?.map(|n| n.perms).unwrap_or_default();
                    changes.push(Change {
                        path,
                        perms,
                        recursive: false,
                    });
                }
            }
            Ok(OpOut::Done)
        }
        Op::Rm(p) => {
            let path = path_of(p)?;
            if path == "/" {
                return Err(XsError::Inval);
            }
            match get_checked(v, caller, &path, Need::Write) {
                Ok(node) => {
                    changes.extend(remove_subtree(v, &path, &node)?);
                    Ok(OpOut::Done)
                }
                Err(XsError::NoEnt) => {
                    // Fine if the parent exists.
                    let parent = parent_of(&path).ok_or(XsError::Inval)?;
                    match v.get(parent)? {
                        Some(_) => Ok(OpOut::Done),
                        None => Err(XsError::NoEnt),
                    }
                }
                Err(e) => Err(e),
            }
        }
        Op::Directory(p) => {
            let path = path_of(p)?;
            let n = get_checked(v, caller, &path, Need::Read)?;
            let total: usize = n.children.iter().map(|c| c.len() + 1).sum();
            if total > PAYLOAD_MAX {
                return Err(XsError::TooBig);
            }
            Ok(OpOut::Names(n.children))
        }
        Op::DirectoryPart(p, offset) => {
            let path = path_of(p)?;
            let n = get_checked(v, caller, &path, Need::Read)?;
            Ok(OpOut::Raw(directory_part(&n, offset)))
        }
        Op::GetPerms(p) => {
            let path = path_of(p)?;
            Ok(OpOut::Perms(
                get_checked(v, caller, &path, Need::Read)?.perms,
            ))
        }
        Op::SetPerms(p, ref perms) => {
            let path = path_of(p)?;
            if perms.is_empty() {
                return Err(XsError::Inval);
            }
            let mut n = match v.get(&path)? {
                Some(n) => n,
                None => return Err(errno_from_parents(v, caller, &path, Need::Write)),
            };
            check_set_perms(caller, quotas, &n.perms, perms)?;
            let old_cost = owned_cost(caller, &path, &n);
            n.perms = perms.clone();
            if !caller.privileged {
                if n.size() > quotas.node_size {
                    return Err(XsError::NoSpc);
                }
                let new_cost = owned_cost(caller, &path, &n);
                v.check_quota(caller, 0, new_cost.saturating_sub(old_cost))?;
            }
            v.put(&path, n)?;
            changes.push(Change {
                path,
                perms: perms.clone(),
                recursive: false,
            });
            Ok(OpOut::Done)
        }
    }
}

/// May `caller` replace permissions `old` by `new`?
pub(crate) fn check_set_perms(
    caller: &Caller,
    quotas: &Quotas,
    old: &[Perm],
    new: &[Perm],
) -> Result<(), XsError> {
    if new.is_empty() {
        return Err(XsError::Inval);
    }
    if !caller.rights(old).owner {
        return Err(XsError::Acces);
    }
    if !caller.privileged {
        if new.len() > quotas.perms_per_node {
            return Err(XsError::NoSpc);
        }
        // A guest cannot give its nodes away.
        if new.first().map(|p| p.domid) != old.first().map(|p| p.domid) {
            return Err(XsError::Perm);
        }
    }
    Ok(())
}

/// DIRECTORY_PART reply: `<gen>\0` then whole child names from byte
/// `offset` of the NUL-separated list, plus an empty name when the list is
/// complete.
fn directory_part(n: &Node, offset: u64) -> Vec<u8> {
    let mut list = Vec::new();
    for c in &n.children {
        list.extend_from_slice(c.as_bytes());
        list.push(0);
    }
    let mut out = format!("{}", n.gen).into_bytes();
    out.push(0);
    let off = usize::try_from(offset).unwrap_or(usize::MAX);
    let rest = list.get(off..).unwrap_or(&[]);
    if rest.is_empty() {
        out.push(0);
        return out;
    }
    let room = PAYLOAD_MAX.saturating_sub(out.len() + 1);
    if rest.len() <= room {
        out.extend_from_slice(rest);
        out.push(0);
    } else {
        // Cut after the last whole name that fits.
        let cut = rest[..room]
            .iter()
            .rposition(|&b| b == 0)
            .map_or(0, |i| i + 1);
        out.extend_from_slice(&rest[..cut]);
    }
    out
}

/// Where a domain is with the store.
#[derive(Debug, Clone, Default)]
pub(crate) struct DomainState {
    pub introduced: bool,
    pub mfn: u64,
    pub port: u32,
    pub target: Option<u32>,
}

/// The xenstore database with its clients. See the module docs for the
/// threading model: share it as `Arc<Mutex<Store>>`.
pub struct Store {
    pub(crate) tree: Tree,
    pub(crate) acct: Accounts,
    pub(crate) quotas: Quotas,
    pub(crate) special_perms: BTreeMap<String, Vec<Perm>>,
    pub(crate) domains: BTreeMap<u32, DomainState>,
    pub(crate) conns: HashMap<ConnId, Conn>,
    pub(crate) next_conn: u64,
    pub(crate) txns: HashMap<u32, Txn>,
    pub(crate) next_txid: u32,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("nodes", &self.tree.nodes.len())
            .field("conns", &self.conns.len())
            .field("txns", &self.txns.len())
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// The in-process connection (domain 0) used by the methods below.
    pub const LOCAL: ConnId = ConnId(0);

    /// An empty store: `/`, `/local`, `/local/domain`, `/tool`,
    /// `/tool/xenstored`, all `n0`.
    pub fn new() -> Store {
        Store::with_quotas(Quotas::default())
    }

    pub fn with_quotas(quotas: Quotas) -> Store {
        let dom0_none = vec![Perm::new(Access::None, 0)];
        let mut s = Store {
            tree: Tree::default(),
            acct: Accounts::new(),
            quotas,
            special_perms: BTreeMap::new(),
            domains: BTreeMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            txns: HashMap::new(),
            next_txid: 1,
        };
        s.tree
            .put(&mut s.acct, "/", Node::new(Vec::new(), dom0_none.clone()));
        s.conns.insert(Store::LOCAL, Conn::new(0, true));
        for p in ["/local/domain", "/tool/xenstored"] {
            // Privileged creation cannot fail on a valid path.
            if let Err(e) = s.mkdir(p) {
                log::error!("xenstore: initial {p}: {e}");
            }
        }
        for sp in [INTRODUCE_DOMAIN, RELEASE_DOMAIN] {
            s.special_perms.insert(sp.to_owned(), dom0_none.clone());
        }
        s
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Change the quotas (applies from the next request on).
    pub fn set_quotas(&mut self, q: Quotas) {
        self.quotas = q;
        self.quotas.payload_max = self.quotas.payload_max.min(PAYLOAD_MAX);
    }

    /// Current usage of `domid`.
    pub fn domain_usage(&self, domid: u32) -> DomainUsage {
        self.acct.get(&domid).copied().unwrap_or_default()
    }

    /// Number of nodes in the tree.
    pub fn node_count(&self) -> usize {
        self.tree.nodes.len()
    }

    /// Approximate bytes held by the tree (paths, values, permissions).
    pub fn tree_bytes(&self) -> usize {
        self.tree.nodes.iter().map(|(p, n)| n.cost(p)).sum()
    }

    pub(crate) fn caller(&self, conn: ConnId) -> Result<Caller, XsError> {
        let c = self.conns.get(&conn).ok_or(XsError::Inval)?;
        let target = self.domains.get(&c.domid).and_then(|d| d.target);
        Ok(Caller {
            domid: c.domid,
            privileged: c.privileged || c.domid == 0,
            target,
        })
    }

    /// Run a tree operation for `conn`, outside or inside a transaction.
    pub(crate) fn run_op(&mut self, conn: ConnId, tx: u32, op: &Op<'_>) -> Result<OpOut, XsError> {
        let caller = self.caller(conn)?;
        let mut changes = Vec::new();
        if tx == 0 {
            let out = {
                let mut v = LiveView {
                    tree: &mut self.tree,
                    acct: &mut self.acct,
                    quotas: &self.quotas,
                };
                exec(&mut v, &caller, &self.quotas, op, &mut changes)
            };
            self.fire_changes(&changes);
            out
        } else {
            self.run_txn_op(conn, caller, tx, op)
        }
    }

    /// Special-path (`@...`) permissions for GET_PERMS/SET_PERMS; `None`
    /// when `raw` is not a special path.
    pub(crate) fn special_perms_op(
        &mut self,
        conn: ConnId,
        raw: &[u8],
        set: Option<&[Perm]>,
    ) -> Option<Result<Vec<Perm>, XsError>> {
        if !raw.starts_with(b"@") {
            return None;
        }
        let caller = match self.caller(conn) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let path = match canonical_path(&caller, &self.quotas, raw, true) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let quotas = self.quotas.clone();
        let Some(perms) = self.special_perms.get_mut(&path) else {
            return Some(Err(XsError::NoEnt));
        };
        Some(match set {
            None if caller.rights(perms).read => Ok(perms.clone()),
            None => Err(XsError::Acces),
            Some(new) => check_set_perms(&caller, &quotas, perms, new).map(|()| {
                *perms = new.to_vec();
                new.to_vec()
            }),
        })
    }

    // ---- In-process API (domain 0, no transaction) ----

    /// Read a value.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, XsError> {
        match self.run_op(Store::LOCAL, 0, &Op::Read(path.as_bytes()))? {
            OpOut::Value(v) => Ok(v),
            _ => Err(XsError::Io),
        }
    }

    /// Read a value as (lossy) UTF-8 text.
    pub fn read_string(&mut self, path: &str) -> Result<String, XsError> {
        self.read(path)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    pub fn exists(&mut self, path: &str) -> bool {
        self.read(path).is_ok()
    }

    /// Write a value, creating missing parents.
    pub fn write(&mut self, path: &str, value: impl AsRef<[u8]>) -> Result<(), XsError> {
        self.run_op(Store::LOCAL, 0, &Op::Write(path.as_bytes(), value.as_ref()))
            .map(drop)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), XsError> {
        self.run_op(Store::LOCAL, 0, &Op::Mkdir(path.as_bytes()))
            .map(drop)
    }

    /// Remove a node and its subtree (no error if it is already gone).
    pub fn rm(&mut self, path: &str) -> Result<(), XsError> {
        self.run_op(Store::LOCAL, 0, &Op::Rm(path.as_bytes()))
            .map(drop)
    }

    /// Child names.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, XsError> {
        let caller = Caller::DOM0;
        let path = canonical_path(&caller, &self.quotas, path.as_bytes(), false)?;
        self.tree
            .nodes
            .get(&path)
            .map(|n| n.children.clone())
            .ok_or(XsError::NoEnt)
    }

    pub fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>, XsError> {
        if let Some(r) = self.special_perms_op(Store::LOCAL, path.as_bytes(), None) {
            return r;
        }
        match self.run_op(Store::LOCAL, 0, &Op::GetPerms(path.as_bytes()))? {
            OpOut::Perms(p) => Ok(p),
            _ => Err(XsError::Io),
        }
    }

    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        if let Some(r) = self.special_perms_op(Store::LOCAL, path.as_bytes(), Some(perms)) {
            return r.map(drop);
        }
        self.run_op(
            Store::LOCAL,
            0,
            &Op::SetPerms(path.as_bytes(), perms.to_vec()),
        )
        .map(drop)
    }

    /// Write `value` at `path` and give it permissions `perms` (as the
    /// toolstack does for every node it creates for a guest).
    pub fn write_with_perms(
        &mut self,
        path: &str,
        value: impl AsRef<[u8]>,
        perms: &[Perm],
    ) -> Result<(), XsError> {
        self.write(path, value)?;
        self.set_perms(path, perms)
    }

    /// Create a directory with permissions `perms`.
    pub fn mkdir_with_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        self.mkdir(path)?;
        self.set_perms(path, perms)
    }

    // ---- In-process transactions ----

    pub fn transaction_start(&mut self) -> Result<TxId, XsError> {
        self.txn_start(Store::LOCAL).map(TxId)
    }

    /// Commit (`commit = true`) or abort a transaction. A commit that lost a
    /// race returns EAGAIN; start over.
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), XsError> {
        self.txn_end(Store::LOCAL, tx.0, commit)
    }

    pub fn tx_read(&mut self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        match self.run_op(Store::LOCAL, tx.0, &Op::Read(path.as_bytes()))? {
            OpOut::Value(v) => Ok(v),
            _ => Err(XsError::Io),
        }
    }

    pub fn tx_write(
        &mut self,
        tx: TxId,
        path: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<(), XsError> {
        self.run_op(
            Store::LOCAL,
            tx.0,
            &Op::Write(path.as_bytes(), value.as_ref()),
        )
        .map(drop)
    }

    pub fn tx_mkdir(&mut self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.run_op(Store::LOCAL, tx.0, &Op::Mkdir(path.as_bytes()))
            .map(drop)
    }

    pub fn tx_rm(&mut self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.run_op(Store::LOCAL, tx.0, &Op::Rm(path.as_bytes()))
            .map(drop)
    }

    pub fn tx_directory(&mut self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        match self.run_op(Store::LOCAL, tx.0, &Op::Directory(path.as_bytes()))? {
            OpOut::Names(n) => Ok(n),
            _ => Err(XsError::Io),
        }
    }

    pub fn tx_set_perms(&mut self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        self.run_op(
            Store::LOCAL,
            tx.0,
            &Op::SetPerms(path.as_bytes(), perms.to_vec()),
        )
        .map(drop)
    }

    // ---- Domains ----

    /// Record that `domid` talks to the store (INTRODUCE); fires
    /// `@introduceDomain` the first time.
    pub fn introduce_domain(&mut self, domid: u32, mfn: u64, port: u32) -> Result<(), XsError> {
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(XsError::Inval);
        }
        let d = self.domains.entry(domid).or_default();
        d.mfn = mfn;
        d.port = port;
        if !d.introduced {
            d.introduced = true;
            self.fire_special(INTRODUCE_DOMAIN, domid);
        }
        Ok(())
    }

    pub fn is_domain_introduced(&self, domid: u32) -> bool {
        domid == 0 || self.domains.get(&domid).is_some_and(|d| d.introduced)
    }

    /// Forget `domid` (RELEASE, or the domain died): its connections stop
    /// being served, their watches and transactions go, the nodes it owns
    /// are deleted, and `@releaseDomain` fires.
    pub fn release_domain(&mut self, domid: u32) -> Result<(), XsError> {
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(XsError::Inval);
        }
        match self.domains.get_mut(&domid) {
            Some(d) if d.introduced => {
                d.introduced = false;
                d.target = None;
            }
            _ => return Err(XsError::NoEnt),
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| **id != Store::LOCAL && c.domid == domid)
            .map(|(id, _)| *id)
            .collect();
        for id in conns {
            self.reset_conn(id);
            if let Some(c) = self.conns.get_mut(&id) {
                c.alive = false;
            }
        }
        self.remove_orphans(domid);
        self.fire_special(RELEASE_DOMAIN, domid);
        Ok(())
    }

    /// Set the target of `domid` (SET_TARGET).
    pub fn set_target(&mut self, domid: u32, target: u32) -> Result<(), XsError> {
        if !self.is_domain_introduced(domid) || domid == 0 {
            return Err(XsError::NoEnt);
        }
        if target >= DOMID_FIRST_RESERVED {
            return Err(XsError::Inval);
        }
        if let Some(d) = self.domains.get_mut(&domid) {
            d.target = Some(target);
        }
        Ok(())
    }

    /// Delete the nodes owned by a dead domain and drop its ACL entries.
    fn remove_orphans(&mut self, domid: u32) {
        let mut owned: Vec<String> = self
            .tree
            .nodes
            .iter()
            .filter(|(_, n)| n.owner() == domid)
            .map(|(p, _)| p.clone())
            .collect();
        owned.sort_by_key(|p| p.len());
        let mut changes = Vec::new();
        for p in owned {
            let Some(node) = self.tree.nodes.get(&p).cloned() else {
                continue; // already gone with an ancestor
            };
            let mut v = LiveView {
                tree: &mut self.tree,
                acct: &mut self.acct,
                quotas: &self.quotas,
            };
            match remove_subtree(&mut v, &p, &node) {
                Ok(c) => changes.extend(c),
                Err(e) => log::warn!("xenstore: removing orphan {p}: {e}"),
            }
        }
        for n in self.tree.nodes.values_mut() {
            if n.perms.iter().skip(1).any(|p| p.domid == domid) {
                let owner = n.perms.first().copied();
                n.perms.retain(|p| p.domid != domid);
                if n.perms.is_empty() {
                    n.perms.extend(owner);
                }
            }
        }
        for perms in self.special_perms.values_mut() {
            perms.retain(|p| p.domid != domid);
            if perms.is_empty() {
                perms.push(Perm::new(Access::None, 0));
            }
        }
        self.acct.remove(&domid);
        self.fire_changes(&changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(d: u32) -> Caller {
        Caller {
            domid: d,
            privileged: false,
            target: None,
        }
    }

    #[test]
    fn perm_parse_and_print() {
        assert_eq!(Perm::parse(b"r5"), Ok(Perm::new(Access::Read, 5)));
        assert_eq!(Perm::parse(b"b0").unwrap().to_string(), "b0");
        for bad in [
            &b""[..],
            b"x1",
            b"r",
            b"r-1",
            b"r99999999999",
            b"r65536",
            b"rr",
        ] {
            assert_eq!(Perm::parse(bad), Err(XsError::Inval), "{bad:?}");
        }
        assert!(parse_perms::<&str>(&[]).is_err());
    }

    #[test]
    fn rights_rules() {
        let perms = vec![Perm::new(Access::None, 5), Perm::new(Access::Read, 7)];
        assert!(guest(5).rights(&perms).owner);
        assert!(guest(5).rights(&perms).write);
        let r7 = guest(7).rights(&perms);
        assert!(r7.read && !r7.write && !r7.owner);
        let r8 = guest(8).rights(&perms);
        assert!(!r8.read && !r8.write);
        assert!(Caller::DOM0.rights(&perms).owner);
        let both = vec![Perm::new(Access::Both, 0)];
        assert!(guest(3).rights(&both).write);
        let tgt = Caller {
            domid: 9,
            privileged: false,
            target: Some(5),
        };
        assert!(tgt.rights(&perms).owner);
    }

    #[test]
    fn path_rules() {
        let q = Quotas::default();
        let g = guest(3);
        let ok = |raw: &str| canonical_path(&g, &q, raw.as_bytes(), false);
        assert_eq!(ok("/a/b").unwrap(), "/a/b");
        assert_eq!(ok("/").unwrap(), "/");
        assert_eq!(ok("device/vbd").unwrap(), "/local/domain/3/device/vbd");
        for bad in ["", "/a/", "/a//b", "/a b", "/a\u{e9}", "@x", "/a.b"] {
            assert_eq!(ok(bad), Err(XsError::Inval), "{bad:?}");
        }
        assert_eq!(
            canonical_path(&g, &q, b"@releaseDomain", true).unwrap(),
            "@releaseDomain"
        );
        assert!(canonical_path(&g, &q, b"@", true).is_err());
        assert!(canonical_path(&g, &q, &[0xff], false).is_err());
        // Length limits.
        let long_rel = "a".repeat(2048);
        assert!(ok(&long_rel).is_ok());
        assert!(ok(&"a".repeat(2049)).is_err());
        let abs = format!("/{}", "a".repeat(3071));
        assert!(canonical_path(&Caller::DOM0, &q, abs.as_bytes(), false).is_ok());
        let abs = format!("/{}", "a".repeat(3072));
        assert!(canonical_path(&Caller::DOM0, &q, abs.as_bytes(), false).is_err());
        // Unprivileged absolute paths outside the home count whole.
        assert!(ok(&format!("/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn path_helpers() {
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(!is_child("/ab", "/a"));
        assert!(is_child("/x", "/"));
        assert!(!is_child("@releaseDomain", "/"));
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/"), None);
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(depth_below("/a/b/c", "/a"), 2);
        assert_eq!(depth_below("/a", "/a"), 0);
        assert_eq!(depth_below("/a/b", "/"), 2);
        assert_eq!(home_prefix_len("/local/domain/12/x"), 17);
        assert_eq!(home_prefix_len("/local/domain/x/y"), 0);
    }

    #[test]
    fn initial_tree() {
        let mut s = Store::new();
        assert_eq!(s.directory("/").unwrap(), vec!["local", "tool"]);
        assert_eq!(s.directory("/local").unwrap(), vec!["domain"]);
        assert_eq!(s.directory("/tool").unwrap(), vec!["xenstored"]);
        assert_eq!(s.node_count(), 5);
    }

    #[test]
    fn local_api_basics() {
        let mut s = Store::new();
        s.write("/a/b/c", "v").unwrap();
        assert_eq!(s.read("/a/b/c").unwrap(), b"v");
        assert_eq!(s.read("/a/b").unwrap(), b"");
        assert_eq!(s.directory("/a").unwrap(), vec!["b"]);
        assert!(s.exists("/a"));
        s.rm("/a/b").unwrap();
        assert!(!s.exists("/a/b/c"));
        assert_eq!(s.read("/a/b"), Err(XsError::NoEnt));
        s.rm("/a/b").unwrap(); // parent exists: fine
        assert_eq!(s.rm("/nope/x"), Err(XsError::NoEnt));
        assert_eq!(s.rm("/"), Err(XsError::Inval));
        s.mkdir("/m").unwrap();
        s.mkdir("/m").unwrap();
        assert_eq!(s.get_perms("/m").unwrap(), vec![Perm::new(Access::None, 0)]);
        let p = parse_perms(&["n5", "r0"]).unwrap();
        s.set_perms("/m", &p).unwrap();
        assert_eq!(s.get_perms("/m").unwrap(), p);
        assert_eq!(s.domain_usage(5).nodes, 1);
        s.write("/m/child", "x").unwrap();
        assert_eq!(s.get_perms("/m/child").unwrap(), p, "children inherit");
        assert_eq!(s.domain_usage(5).nodes, 2);
        s.rm("/m").unwrap();
        assert_eq!(s.domain_usage(5).nodes, 0);
        assert_eq!(s.domain_usage(5).node_bytes, 0);
    }

    #[test]
    fn directory_part_chunks() {
        let mut s = Store::new();
        for i in 0..600 {
            s.write(&format!("/big/child-number-{i:04}"), "").unwrap();
        }
        assert_eq!(
            s.run_op(Store::LOCAL, 0, &Op::Directory(b"/big")),
            Err(XsError::TooBig)
        );
        let mut names = Vec::new();
        let mut off = 0u64;
        let mut gen = None;
        loop {
            let OpOut::Raw(r) = s
                .run_op(Store::LOCAL, 0, &Op::DirectoryPart(b"/big", off))
                .unwrap()
            else {
                panic!()
            };
            assert!(r.len() <= PAYLOAD_MAX);
            let nul = r.iter().position(|&b| b == 0).unwrap();
            let g = r[..nul].to_vec();
            assert_eq!(*gen.get_or_insert(g.clone()), g);
            let body = &r[nul + 1..];
            off += body.len() as u64;
            let done = body.ends_with(b"\0\0") || body == b"\0";
            for n in body.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                names.push(String::from_utf8(n.to_vec()).unwrap());
            }
            if done {
                break;
            }
        }
        assert_eq!(names.len(), 600);
        assert_eq!(names[599], "child-number-0599");
        // Offset past the end.
        let OpOut::Raw(r) = s
            .run_op(Store::LOCAL, 0, &Op::DirectoryPart(b"/big", 1 << 40))
            .unwrap()
        else {
            panic!()
        };
        assert!(r.ends_with(b"\0\0"));
    }
}
