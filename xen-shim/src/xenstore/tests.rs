//! Protocol-level tests: every message type through `handle_message`,
//! permissions, transactions, watch rules, quotas, malformed input, and a
//! hostile guest flooding its ring.

use super::ring::tests::{Guest, PAGE};
use super::*;
use crate::mem::VecMem;
use crate::xenstore::wire::encode_message;

/// A client of the store speaking xs_wire.
struct Client {
    conn: ConnId,
    next: u32,
}

type Reply = (u32, Vec<u8>);

impl Client {
    fn dom0(s: &mut Store) -> Client {
        Client {
            conn: s.connect(0, true),
            next: 1,
        }
    }
    fn guest(s: &mut Store, domid: u32) -> Client {
        Client {
            conn: s.connect(domid, false),
            next: 1,
        }
    }
    /// Send one request; return (type, payload) of its reply. Watch events
    /// queued before the reply are returned by `events`.
    fn req(&mut self, s: &mut Store, ty: u32, tx: u32, payload: &[u8]) -> Reply {
        let id = self.next;
        self.next += 1;
        let h = Header {
            ty,
            req_id: id,
            tx_id: tx,
            len: payload.len() as u32,
        };
        s.handle_message(self.conn, &h, payload);
        let mut reply = None;
        let mut rest = Vec::new();
        while let Some(m) = s.take_output(self.conn) {
            let h = Header::parse(m[..16].try_into().unwrap());
            if h.ty == MsgType::WatchEvent.as_u32() {
                rest.push(m);
                continue;
            }
            assert_eq!(h.req_id, id);
            assert_eq!(h.tx_id, tx);
            assert!(reply.is_none(), "one reply per request");
            reply = Some((h.ty, m[16..].to_vec()));
        }
        // Put events back for `events()`.
        PENDING.with(|p| p.borrow_mut().extend(rest));
        reply.expect("a reply")
    }
    fn t(&mut self, s: &mut Store, ty: MsgType, tx: u32, payload: &[u8]) -> Reply {
        self.req(s, ty.as_u32(), tx, payload)
    }
    fn ok(&mut self, s: &mut Store, ty: MsgType, tx: u32, payload: &[u8]) -> Vec<u8> {
        let (t, p) = self.t(s, ty, tx, payload);
        assert_eq!(
            t,
            ty.as_u32(),
            "{ty:?} failed: {}",
            String::from_utf8_lossy(&p)
        );
        p
    }
    fn err(&mut self, s: &mut Store, ty: MsgType, tx: u32, payload: &[u8]) -> XsError {
        let (t, p) = self.t(s, ty, tx, payload);
        assert_eq!(t, MsgType::Error.as_u32(), "{ty:?} unexpectedly succeeded");
        assert_eq!(p.last(), Some(&0));
        XsError::from_name(&p).expect("a Xen error name")
    }
    fn events(&mut self, s: &mut Store) -> Vec<String> {
        while let Some(m) = s.take_output(self.conn) {
            PENDING.with(|p| p.borrow_mut().push(m));
        }
        PENDING.with(|p| {
            p.borrow_mut()
                .drain(..)
                .map(|m| {
                    let h = Header::parse(m[..16].try_into().unwrap());
                    assert_eq!(h.ty, MsgType::WatchEvent.as_u32());
                    assert_eq!((h.req_id, h.tx_id), (0, 0));
                    String::from_utf8(m[16..].to_vec()).unwrap()
                })
                .collect()
        })
    }
    fn write(&mut self, s: &mut Store, path: &str, value: &str) -> Reply {
        self.t(s, MsgType::Write, 0, format!("{path}\0{value}").as_bytes())
    }
}

thread_local! {
    static PENDING: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn z(s: &str) -> Vec<u8> {
    format!("{s}\0").into_bytes()
}

fn store_with_guest(domid: u32) -> Store {
    let mut s = Store::new();
    populate_dom0(&mut s).unwrap();
    populate_domain(&mut s, domid, &format!("g{domid}"), 131072, 2).unwrap();
    s.introduce_domain(domid, 0x1000, 1).unwrap();
    s
}

// ---------------------------------------------------------------- messages

#[test]
fn msg_read_write_mkdir_rm_directory() {
    let mut s = Store::new();
    let mut c = Client::dom0(&mut s);
    assert_eq!(c.ok(&mut s, MsgType::Write, 0, b"/a/b\0val\0ue"), b"OK\0");
    assert_eq!(c.ok(&mut s, MsgType::Read, 0, &z("/a/b")), b"val\0ue");
    assert_eq!(c.ok(&mut s, MsgType::Read, 0, &z("/a")), b"");
    assert_eq!(c.ok(&mut s, MsgType::Write, 0, b"/empty\0"), b"OK\0");
    assert_eq!(c.ok(&mut s, MsgType::Read, 0, &z("/empty")), b"");
    assert_eq!(c.ok(&mut s, MsgType::Mkdir, 0, &z("/a/c/d")), b"OK\0");
    assert_eq!(c.ok(&mut s, MsgType::Mkdir, 0, &z("/a/c/d")), b"OK\0");
    assert_eq!(c.ok(&mut s, MsgType::Directory, 0, &z("/a")), b"b\0c\0");
    assert_eq!(c.ok(&mut s, MsgType::Directory, 0, &z("/a/b")), b"");
    assert_eq!(c.ok(&mut s, MsgType::Rm, 0, &z("/a/c")), b"OK\0");
    assert_eq!(
        c.err(&mut s, MsgType::Read, 0, &z("/a/c/d")),
        XsError::NoEnt
    );
    assert_eq!(c.ok(&mut s, MsgType::Rm, 0, &z("/a/c")), b"OK\0");
    assert_eq!(c.err(&mut s, MsgType::Rm, 0, &z("/a/c/d")), XsError::NoEnt);
    assert_eq!(c.err(&mut s, MsgType::Rm, 0, &z("/")), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Read, 0, &z("/nope")), XsError::NoEnt);
    assert_eq!(
        c.err(&mut s, MsgType::Directory, 0, &z("/nope")),
        XsError::NoEnt
    );
    // Relative paths of dom0 are under /local/domain/0.
    c.ok(&mut s, MsgType::Write, 0, b"rel\0x");
    assert_eq!(s.read("/local/domain/0/rel").unwrap(), b"x");
}

#[test]
fn msg_malformed_payloads() {
    let mut s = Store::new();
    let mut c = Client::dom0(&mut s);
    for ty in [
        MsgType::Read,
        MsgType::Mkdir,
        MsgType::Rm,
        MsgType::Directory,
        MsgType::GetPerms,
        MsgType::GetDomainPath,
        MsgType::Release,
        MsgType::IsDomainIntroduced,
        MsgType::Resume,
    ] {
        assert_eq!(c.err(&mut s, ty, 0, b"/a"), XsError::Inval, "{ty:?} no NUL");
        assert_eq!(c.err(&mut s, ty, 0, b""), XsError::Inval, "{ty:?} empty");
        assert_eq!(
            c.err(&mut s, ty, 0, b"1\0/b\0"),
            XsError::Inval,
            "{ty:?} two args"
        );
    }
    assert_eq!(
        c.err(&mut s, MsgType::Write, 0, b"/novalue"),
        XsError::Inval
    );
    assert_eq!(c.err(&mut s, MsgType::Write, 0, b"\0v"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Write, 0, b"/a b\0v"), XsError::Inval);
    assert_eq!(
        c.err(&mut s, MsgType::Write, 0, b"/a//b\0v"),
        XsError::Inval
    );
    assert_eq!(c.err(&mut s, MsgType::Write, 0, b"/a/\0v"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Write, 0, b"@x\0v"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Read, 0, b"/\xff\0"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Watch, 0, b"/a\0"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Watch, 0, b"/a\0t"), XsError::Inval);
    assert_eq!(
        c.err(&mut s, MsgType::Watch, 0, b"/a\0t\0x\0"),
        XsError::Inval
    );
    assert_eq!(c.err(&mut s, MsgType::Unwatch, 0, b"/a\0"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::SetPerms, 0, b"/\0"), XsError::Inval);
    assert_eq!(
        c.err(&mut s, MsgType::SetPerms, 0, b"/\0q0\0"),
        XsError::Inval
    );
    assert_eq!(
        c.err(&mut s, MsgType::SetPerms, 0, b"/\0r\0"),
        XsError::Inval
    );
    assert_eq!(
        c.err(&mut s, MsgType::DirectoryPart, 0, b"/\0"),
        XsError::Inval
    );
    assert_eq!(
        c.err(&mut s, MsgType::DirectoryPart, 0, b"/\0x\0"),
        XsError::Inval
    );
    assert_eq!(
        c.err(&mut s, MsgType::GetDomainPath, 0, &z("abc")),
        XsError::Inval
    );
    assert_eq!(
        c.err(&mut s, MsgType::GetDomainPath, 0, &z("70000")),
        XsError::Inval
    );
    assert_eq!(c.err(&mut s, MsgType::Introduce, 0, b"1\0"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::SetTarget, 0, b"1\0"), XsError::Inval);
    assert_eq!(c.err(&mut s, MsgType::Control, 0, b""), XsError::Inval);
    // Oversized payloads handed in directly.
    let big = vec![b'a'; 4097];
    assert_eq!(c.err(&mut s, MsgType::Write, 0, &big), XsError::TooBig);
}

#[test]
fn msg_unknown_types_are_enosys() {
    let mut s = Store::new();
    let mut c = Client::dom0(&mut s);
    for ty in [15u32, 16, 20, 23, 24, 25, 26, 27, 1000, 0xffff, u32::MAX] {
        let (t, p) = c.req(&mut s, ty, 0, b"/\0");
        assert_eq!(t, MsgType::Error.as_u32(), "type {ty}");
        assert_eq!(p, b"ENOSYS\0");
    }
    // The connection keeps working.
    c.ok(&mut s, MsgType::Read, 0, &z("/"));
}

#[test]
fn msg_get_set_perms() {
    let mut s = Store::new();
    let mut c = Client::dom0(&mut s);
    c.write(&mut s, "/p", "");
    assert_eq!(c.ok(&mut s, MsgType::GetPerms, 0, &z("/p")), b"n0\0");
    assert_eq!(
        c.ok(&mut s, MsgType::SetPerms, 0, b"/p\0n5\0r0\0b7\0"),
        b"OK\0"
    );
    assert_eq!(
        c.ok(&mut s, MsgType::GetPerms, 0, &z("/p")),
        b"n5\0r0\0b7\0"
    );
    assert_eq!(
        c.err(&mut s, MsgType::GetPerms, 0, &z("/q")),
        XsError::NoEnt
    );
    assert_eq!(
        c.err(&mut s, MsgType::SetPerms, 0, b"/q\0n0\0"),
        XsError::NoEnt
    );
    // Special nodes.
    assert_eq!(
        c.ok(&mut s, MsgType::GetPerms, 0, &z("@releaseDomain")),
        b"n0\0"
    );
    c.ok(&mut s, MsgType::SetPerms, 0, b"@releaseDomain\0n0\0r5\0");
    assert_eq!(
        c.ok(&mut s, MsgType::GetPerms, 0, &z("@releaseDomain")),
        b"n0\0r5\0"
    );
    assert_eq!(
        c.err(&mut s, MsgType::GetPerms, 0, &z("@other")),
        XsError::NoEnt
    );
}

#[test]
fn msg_domain_management() {
    let mut s = Store::new();
    let mut c = Client::dom0(&mut s);
    assert_eq!(
        c.ok(&mut s, MsgType::GetDomainPath, 0, &z("7")),
        b"/local/domain/7\0"
    );
    assert_eq!(
        c.ok(&mut s, MsgType::IsDomainIntroduced, 0, &z("7")),
        b"F\0"
    );
    assert_eq!(
        c.ok(&mut s, MsgType::IsDomainIntroduced, 0, &z("0")),
        b"T\0"
    );
    assert_eq!(
        c.ok(&mut s, MsgType::Watch, 0, b"@introduceDomain\0i\0"),
        b"OK\0"
    );
    assert_eq!(
        c.ok(&mut s, MsgType::Watch, 0, b"@releaseDomain\0r\0"),
        b"OK\0"
    );
    assert_eq!(
        c.events(&mut s),
        vec!["@introduceDomain\0i\0", "@releaseDomain\0r\0"]
    );
    assert_eq!(
        c.err(&mut s, MsgType::Introduce, 0, b"7\0-1\0"),
        XsError::Inval,
        "3 args needed"
    );
    assert!(c.events(&mut s).is_empty());
    assert_eq!(
        c.ok(&mut s, MsgType::Introduce, 0, b"7\x004096\x003\0"),
        b"OK\0"
    );
    assert_eq!(c.events(&mut s), vec!["@introduceDomain\0i\0"]);
    assert_eq!(
        c.ok(&mut s, MsgType::IsDomainIntroduced, 0, &z("7")),
        b"T\0"
    );
    assert_eq!(c.ok(&mut s, MsgType::Resume, 0, &z("7")), b"OK\0");
    assert_eq!(c.err(&mut s, MsgType::Resume, 0, &z("8")), XsError::NoEnt);
    assert_eq!(c.ok(&mut s, MsgType::SetTarget, 0, b"7\x008\0"), b"OK\0");
    assert_eq!(
        c.err(&mut s, MsgType::SetTarget, 0, b"9\x008\0"),
        XsError::NoEnt
    );
    assert_eq!(
        c.err(&mut s, MsgType::Introduce, 0, b"0\x001\x001\0"),
        XsError::Inval
    );
    assert_eq!(c.ok(&mut s, MsgType::Release, 0, &z("7")), b"OK\0");
    assert_eq!(c.events(&mut s), vec!["@releaseDomain\0r\0"]);
    assert_eq!(c.err(&mut s, MsgType::Release, 0, &z("7")), XsError::NoEnt);
    assert_eq!(c.err(&mut s, MsgType::Release, 0, &z("0")), XsError::Inval);
    assert_eq!(
        c.ok(&mut s, MsgType::IsDomainIntroduced, 0, &z("7")),
        b"F\0"
    );
}

#[test]
fn msg_control_and_reset_watches() {
    let mut s = Store::new();
    let mut c = Client::dom0(&mut s);
    assert!(c
        .ok(&mut s, MsgType::Control, 0, &z("help"))
        .starts_with(b"check"));
    assert!(
        String::from_utf8(c.ok(&mut s, MsgType::Control, 0, &z("quota")))
            .unwrap()
            .contains("nodes 1000")
    );
    assert_eq!(c.ok(&mut s, MsgType::Control, 0, b"print\0hi\0"), b"OK\0");
    assert_eq!(
        c.err(&mut s, MsgType::Control, 0, &z("frobnicate")),
        XsError::Inval
    );
    c.ok(&mut s, MsgType::Watch, 0, b"/w\0t\0");
    let tx = c.ok(&mut s, MsgType::TransactionStart, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&tx[..tx.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    c.events(&mut s);
    assert_eq!(c.ok(&mut s, MsgType::ResetWatches, 0, b"\0"), b"OK\0");
    c.write(&mut s, "/w", "1");
    assert!(c.events(&mut s).is_empty());
    assert_eq!(
        c.err(&mut s, MsgType::TransactionEnd, tx, &z("T")),
        XsError::NoEnt
    );
}

// ---------------------------------------------------------------- permissions

#[test]
fn perms_guest_confined_to_what_it_may_see() {
    let mut s = store_with_guest(5);
    s.write("/secret/key", "x").unwrap();
    let mut g = Client::guest(&mut s, 5);
    // Readable own dir, unreadable dom0 tree, existence not revealed.
    assert_eq!(g.ok(&mut s, MsgType::Read, 0, &z("name")), b"g5");
    assert_eq!(
        g.err(&mut s, MsgType::Read, 0, &z("/secret/key")),
        XsError::Acces
    );
    assert_eq!(
        g.err(&mut s, MsgType::Read, 0, &z("/secret/nope")),
        XsError::Acces
    );
    assert_eq!(
        g.err(&mut s, MsgType::Read, 0, &z("/nope/x")),
        XsError::Acces
    );
    assert_eq!(
        g.err(&mut s, MsgType::Directory, 0, &z("/local/domain")),
        XsError::Acces
    );
    assert_eq!(
        g.err(&mut s, MsgType::Read, 0, &z("data/nope")),
        XsError::NoEnt
    );
    // Cannot write outside its writable dirs.
    assert_eq!(g.write(&mut s, "/evil", "1").1, b"EACCES\0");
    assert_eq!(g.write(&mut s, "name", "other").1, b"EACCES\0");
    assert_eq!(g.write(&mut s, "/local/domain/6/x", "1").1, b"EACCES\0");
    assert_eq!(
        g.err(&mut s, MsgType::Mkdir, 0, &z("/evil")),
        XsError::Acces
    );
    assert_eq!(g.err(&mut s, MsgType::Rm, 0, &z("name")), XsError::Acces);
    assert_eq!(g.err(&mut s, MsgType::Rm, 0, &z("/local")), XsError::Acces);
    // Creates in its own dirs, owning what it creates.
    assert_eq!(g.write(&mut s, "data/a/b", "v").1, b"OK\0");
    assert_eq!(
        s.get_perms("/local/domain/5/data/a/b").unwrap(),
        vec![Perm::new(Access::None, 5)]
    );
    assert_eq!(
        g.ok(&mut s, MsgType::Write, 0, b"control/shutdown\0"),
        b"OK\0"
    );
    // Privileged operations.
    for (ty, p) in [
        (MsgType::Introduce, &b"6\x001\x001\0"[..]),
        (MsgType::Release, b"5\0"),
        (MsgType::IsDomainIntroduced, b"5\0"),
        (MsgType::Resume, b"5\0"),
        (MsgType::SetTarget, b"5\x006\0"),
        (MsgType::Control, b"help\0"),
    ] {
        assert_eq!(g.err(&mut s, ty, 0, p), XsError::Acces, "{ty:?}");
    }
    assert_eq!(
        g.ok(&mut s, MsgType::GetDomainPath, 0, &z("5")),
        b"/local/domain/5\0"
    );
    assert_eq!(
        g.err(&mut s, MsgType::GetPerms, 0, &z("@releaseDomain")),
        XsError::Acces
    );
}

#[test]
fn perms_ownership_and_acls() {
    let mut s = store_with_guest(5);
    populate_domain(&mut s, 6, "g6", 1024, 1).unwrap();
    s.introduce_domain(6, 1, 1).unwrap();
    let mut g5 = Client::guest(&mut s, 5);
    let mut g6 = Client::guest(&mut s, 6);
    g5.write(&mut s, "data/shared", "hi");
    // g6 cannot see it until g5 grants access.
    assert_eq!(
        g6.err(&mut s, MsgType::Read, 0, &z("/local/domain/5/data/shared")),
        XsError::Acces
    );
    assert_eq!(
        g5.ok(&mut s, MsgType::SetPerms, 0, b"data/shared\0n5\0r6\0"),
        b"OK\0"
    );
    assert_eq!(
        g6.ok(&mut s, MsgType::Read, 0, &z("/local/domain/5/data/shared")),
        b"hi"
    );
    assert_eq!(
        g6.write(&mut s, "/local/domain/5/data/shared", "x").1,
        b"EACCES\0"
    );
    // Only the owner may change permissions, and a guest cannot give away.
    assert_eq!(
        g6.err(
            &mut s,
            MsgType::SetPerms,
            0,
            b"/local/domain/5/data/shared\0b6\0"
        ),
        XsError::Acces
    );
    assert_eq!(
        g5.err(&mut s, MsgType::SetPerms, 0, b"data/shared\0n6\0"),
        XsError::Perm
    );
    assert_eq!(
        g5.err(&mut s, MsgType::SetPerms, 0, b"name\0n5\0"),
        XsError::Acces
    );
    // Default access letter applies to everyone else.
    g5.ok(&mut s, MsgType::SetPerms, 0, b"data/shared\0b5\0");
    assert_eq!(
        g6.write(&mut s, "/local/domain/5/data/shared", "w6").1,
        b"OK\0"
    );
    // Nodes g6 creates under g5's node belong to g6.
    assert_eq!(
        g6.write(&mut s, "/local/domain/5/data/shared/by6", "1").1,
        b"OK\0"
    );
    assert_eq!(
        s.get_perms("/local/domain/5/data/shared/by6").unwrap()[0].domid,
        6
    );
    assert_eq!(s.domain_usage(6).nodes, 1 + s.domain_usage(6).nodes - 1);
    // Dom0 may chown.
    s.set_perms("/local/domain/5/data/shared", &[Perm::new(Access::None, 6)])
        .unwrap();
    assert_eq!(
        g6.ok(
            &mut s,
            MsgType::GetPerms,
            0,
            &z("/local/domain/5/data/shared")
        ),
        b"n6\0"
    );
    // Perms for special node grant a guest @releaseDomain.
    s.set_perms(
        RELEASE_DOMAIN,
        &[Perm::new(Access::None, 0), Perm::new(Access::Read, 6)],
    )
    .unwrap();
    g6.ok(&mut s, MsgType::Watch, 0, b"@releaseDomain\0r\0");
    g5.ok(&mut s, MsgType::Watch, 0, b"@releaseDomain\0r\0");
    g6.events(&mut s);
    g5.events(&mut s);
    populate_domain(&mut s, 9, "g9", 1024, 1).unwrap();
    s.introduce_domain(9, 1, 1).unwrap();
    s.release_domain(9).unwrap();
    assert_eq!(g6.events(&mut s), vec!["@releaseDomain\0r\0"]);
    assert!(g5.events(&mut s).is_empty());
}

#[test]
fn release_deletes_orphans() {
    let mut s = store_with_guest(5);
    let mut g = Client::guest(&mut s, 5);
    g.write(&mut s, "data/x/y", "1");
    s.write("/shared", "").unwrap();
    s.set_perms(
        "/shared",
        &[Perm::new(Access::None, 0), Perm::new(Access::Both, 5)],
    )
    .unwrap();
    assert!(s.domain_usage(5).nodes > 0);
    s.release_domain(5).unwrap();
    assert!(!s.exists("/local/domain/5/data"));
    assert!(!s.exists("/local/domain/5/control/shutdown"));
    assert!(s.exists("/local/domain/5/name"), "dom0-owned nodes stay");
    assert_eq!(
        s.get_perms("/shared").unwrap(),
        vec![Perm::new(Access::None, 0)]
    );
    assert_eq!(s.domain_usage(5), DomainUsage::default());
    // The released connection is no longer served.
    let (before, _) = (s.pending_replies(g.conn), 0);
    s.handle_message(
        g.conn,
        &Header {
            ty: 2,
            req_id: 1,
            tx_id: 0,
            len: 2,
        },
        b"/\0",
    );
    assert_eq!(s.pending_replies(g.conn), before);
}

// ---------------------------------------------------------------- transactions

fn start(c: &mut Client, s: &mut Store) -> u32 {
    let r = c.ok(s, MsgType::TransactionStart, 0, b"\0");
    assert_eq!(r.last(), Some(&0));
    std::str::from_utf8(&r[..r.len() - 1])
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn txn_wire_rules() {
    let mut s = Store::new();
    let mut a = Client::dom0(&mut s);
    let mut b = Client::dom0(&mut s);
    a.write(&mut s, "/c", "0");
    let t = start(&mut a, &mut s);
    assert_ne!(t, 0);
    assert_eq!(
        a.err(&mut s, MsgType::TransactionStart, t, b"\0"),
        XsError::Busy
    );
    assert_eq!(
        a.err(&mut s, MsgType::TransactionStart, 999, b"\0"),
        XsError::NoEnt
    );
    assert_eq!(a.err(&mut s, MsgType::Read, 999, &z("/c")), XsError::NoEnt);
    // Another connection cannot use it.
    assert_eq!(b.err(&mut s, MsgType::Read, t, &z("/c")), XsError::NoEnt);
    assert_eq!(
        b.err(&mut s, MsgType::TransactionEnd, t, &z("T")),
        XsError::NoEnt
    );
    assert_eq!(
        a.err(&mut s, MsgType::TransactionEnd, t, &z("X")),
        XsError::Inval
    );
    assert_eq!(
        a.err(&mut s, MsgType::TransactionEnd, 0, &z("T")),
        XsError::NoEnt
    );
    assert_eq!(a.ok(&mut s, MsgType::Read, t, &z("/c")), b"0");
    assert_eq!(a.ok(&mut s, MsgType::Write, t, b"/c\x001"), b"OK\0");
    assert_eq!(a.ok(&mut s, MsgType::Write, t, b"/d/e\0new"), b"OK\0");
    assert_eq!(a.ok(&mut s, MsgType::Directory, t, &z("/d")), b"e\0");
    assert_eq!(a.ok(&mut s, MsgType::GetPerms, t, &z("/d/e")), b"n0\0");
    assert_eq!(b.ok(&mut s, MsgType::Read, 0, &z("/c")), b"0");
    assert_eq!(b.err(&mut s, MsgType::Read, 0, &z("/d/e")), XsError::NoEnt);
    // Watches fire only on commit.
    b.ok(&mut s, MsgType::Watch, 0, b"/d\0w\0");
    b.events(&mut s);
    assert!(b.events(&mut s).is_empty());
    assert_eq!(a.ok(&mut s, MsgType::TransactionEnd, t, &z("T")), b"OK\0");
    assert_eq!(b.events(&mut s), vec!["/d/e\0w\0"]);
    assert_eq!(b.ok(&mut s, MsgType::Read, 0, &z("/d/e")), b"new");
    assert_eq!(
        a.err(&mut s, MsgType::TransactionEnd, t, &z("T")),
        XsError::NoEnt
    );
}

#[test]
fn txn_conflict_gives_eagain() {
    let mut s = Store::new();
    let mut a = Client::dom0(&mut s);
    let mut b = Client::dom0(&mut s);
    a.write(&mut s, "/cnt", "0");
    let t = start(&mut a, &mut s);
    a.ok(&mut s, MsgType::Read, t, &z("/cnt"));
    b.write(&mut s, "/cnt", "5");
    a.ok(&mut s, MsgType::Write, t, b"/cnt\x001");
    assert_eq!(
        a.err(&mut s, MsgType::TransactionEnd, t, &z("T")),
        XsError::Again
    );
    assert_eq!(b.ok(&mut s, MsgType::Read, 0, &z("/cnt")), b"5");
    // Retry succeeds.
    let t = start(&mut a, &mut s);
    a.ok(&mut s, MsgType::Read, t, &z("/cnt"));
    a.ok(&mut s, MsgType::Write, t, b"/cnt\x006");
    a.ok(&mut s, MsgType::TransactionEnd, t, &z("T"));
    assert_eq!(b.ok(&mut s, MsgType::Read, 0, &z("/cnt")), b"6");
    // Sibling creation conflicts through the parent's generation.
    let t1 = start(&mut a, &mut s);
    let t2 = start(&mut b, &mut s);
    a.ok(&mut s, MsgType::Write, t1, b"/dir/x\x001");
    b.ok(&mut s, MsgType::Write, t2, b"/dir/y\x001");
    a.ok(&mut s, MsgType::TransactionEnd, t1, &z("T"));
    assert_eq!(
        b.err(&mut s, MsgType::TransactionEnd, t2, &z("T")),
        XsError::Again
    );
    // Abort never conflicts.
    let t = start(&mut a, &mut s);
    a.ok(&mut s, MsgType::Read, t, &z("/cnt"));
    b.write(&mut s, "/cnt", "7");
    assert_eq!(a.ok(&mut s, MsgType::TransactionEnd, t, &z("F")), b"OK\0");
}

#[test]
fn txn_guest_permissions_apply_inside() {
    let mut s = store_with_guest(5);
    let mut g = Client::guest(&mut s, 5);
    let t = start(&mut g, &mut s);
    assert_eq!(g.err(&mut s, MsgType::Write, t, b"/x\x001"), XsError::Acces);
    assert_eq!(g.err(&mut s, MsgType::Read, t, &z("/tool")), XsError::Acces);
    g.ok(&mut s, MsgType::Write, t, b"data/k\0v");
    g.ok(&mut s, MsgType::TransactionEnd, t, &z("T"));
    assert_eq!(s.read("/local/domain/5/data/k").unwrap(), b"v");
    assert_eq!(s.get_perms("/local/domain/5/data/k").unwrap()[0].domid, 5);
}

// ---------------------------------------------------------------- watches

#[test]
fn watch_rules() {
    let mut s = store_with_guest(5);
    let mut d = Client::dom0(&mut s);
    let mut g = Client::guest(&mut s, 5);
    // Initial event comes right after the OK reply.
    let h = Header {
        ty: MsgType::Watch.as_u32(),
        req_id: 42,
        tx_id: 0,
        len: 9,
    };
    s.handle_message(d.conn, &h, b"/a/b\0tk\0\0");
    let m1 = s.take_output(d.conn).unwrap();
    let m2 = s.take_output(d.conn).unwrap();
    assert_eq!(&m1[16..], b"OK\0");
    assert_eq!(
        Header::parse(m2[..16].try_into().unwrap()).ty,
        MsgType::WatchEvent.as_u32()
    );
    assert_eq!(&m2[16..], b"/a/b\0tk\0");
    // Events on the node and below, not beside.
    d.write(&mut s, "/a/b", "1");
    d.write(&mut s, "/a/b/c/d", "1");
    d.write(&mut s, "/a/bc", "1");
    d.write(&mut s, "/a", "1");
    assert_eq!(d.events(&mut s), vec!["/a/b\0tk\0", "/a/b/c/d\0tk\0"]);
    // Removing an ancestor reports the watched path.
    d.ok(&mut s, MsgType::Rm, 0, &z("/a"));
    let ev = d.events(&mut s);
    assert!(ev.contains(&"/a/b\0tk\0".to_string()), "{ev:?}");
    // Relative watch from a guest gives relative paths.
    g.ok(&mut s, MsgType::Watch, 0, b"control\0ctl\0");
    assert_eq!(g.events(&mut s), vec!["control\0ctl\0"]);
    s.write("/local/domain/5/control/shutdown", "reboot")
        .unwrap();
    assert_eq!(g.events(&mut s), vec!["control/shutdown\0ctl\0"]);
    // Guests only see events for nodes they can read.
    g.ok(&mut s, MsgType::Watch, 0, b"/local/domain\0all\0");
    g.events(&mut s);
    s.write("/local/domain/0/secret", "1").unwrap();
    s.write("/local/domain/5/data/x", "1").unwrap();
    assert_eq!(g.events(&mut s), vec!["/local/domain/5/data/x\0all\0"]);
    // Duplicate and unknown.
    assert_eq!(
        g.err(&mut s, MsgType::Watch, 0, b"control\0ctl\0"),
        XsError::Exist
    );
    assert_eq!(
        g.err(&mut s, MsgType::Unwatch, 0, b"control\0nope\0"),
        XsError::NoEnt
    );
    assert_eq!(
        g.ok(&mut s, MsgType::Unwatch, 0, b"control\0ctl\0"),
        b"OK\0"
    );
    s.write("/local/domain/5/control/shutdown", "").unwrap();
    assert_eq!(
        g.events(&mut s),
        vec!["/local/domain/5/control/shutdown\0all\0"]
    );
    // Depth limits.
    d.ok(&mut s, MsgType::Watch, 0, b"/deep\0dp\x001\0");
    d.events(&mut s);
    d.write(&mut s, "/deep/x", "1");
    d.write(&mut s, "/deep/x/y", "1");
    assert_eq!(d.events(&mut s), vec!["/deep/x\0dp\0"]);
    // Watch on a path that does not exist yet.
    d.ok(&mut s, MsgType::Watch, 0, b"/later/node\0l\0");
    d.events(&mut s);
    d.write(&mut s, "/later/node", "1");
    assert_eq!(d.events(&mut s), vec!["/later/node\0l\0"]);
    // Tokens and relative watches survive; release drops guest watches.
    s.release_domain(5).unwrap();
    assert_eq!(s.domain_usage(5).watches, 0);
}

#[test]
fn watch_event_queue_is_bounded() {
    let mut s = store_with_guest(5);
    let mut g = Client::guest(&mut s, 5);
    g.ok(&mut s, MsgType::Watch, 0, b"data\0t\0");
    let limit = s.quotas().queued_events;
    for i in 0..limit * 3 {
        s.write("/local/domain/5/data/x", i.to_string()).unwrap();
    }
    assert_eq!(s.pending_events(g.conn), limit);
    assert!(s.dropped_events(g.conn) >= (limit * 2) as u64);
    assert!(s.pending_bytes(g.conn) < limit * 64);
    // Requests are still answered.
    assert_eq!(g.ok(&mut s, MsgType::Read, 0, &z("name")), b"g5");
}

// ---------------------------------------------------------------- quotas

#[test]
fn quota_nodes() {
    let mut s = store_with_guest(5);
    let mut g = Client::guest(&mut s, 5);
    let q = s.quotas().nodes;
    for i in 0.. {
        // At most 100 children per dir: directories are nodes too and
        // their size (children names) is limited.
        let (t, p) = g.write(&mut s, &format!("data/d{}/n{}", i / 100, i % 100), "x");
        if t == MsgType::Error.as_u32() {
            assert_eq!(p, b"ENOSPC\0");
            break;
        }
        assert!(i < 2000);
    }
    assert!(s.domain_usage(5).nodes <= q);
    assert!(s.domain_usage(5).nodes >= q - 1);
    // Existing nodes can still be rewritten, and deleting frees quota.
    assert_eq!(g.write(&mut s, "data/d0/n0", "y").1, b"OK\0");
    g.ok(&mut s, MsgType::Rm, 0, &z("data/d0"));
    assert_eq!(g.write(&mut s, "data/again", "1").1, b"OK\0");
    // Dom0 is not limited.
    s.write("/local/domain/0/many/a", "1").unwrap();
    // In a transaction the same limit holds.
    let free = q - s.domain_usage(5).nodes;
    let t = start(&mut g, &mut s);
    let mut ok = 0;
    let e = loop {
        let (ty, p) = g.t(
            &mut s,
            MsgType::Write,
            t,
            format!("data/d0/t{ok}\0x").as_bytes(),
        );
        if ty == MsgType::Error.as_u32() {
            break p;
        }
        ok += 1;
    };
    assert_eq!(e, b"ENOSPC\0");
    assert_eq!(ok + 1, free, "d0 itself is one of them");
    g.ok(&mut s, MsgType::TransactionEnd, t, &z("T"));
    assert_eq!(s.domain_usage(5).nodes, q);
}

#[test]
fn quota_sizes_and_counts() {
    let mut s = store_with_guest(5);
    let mut g = Client::guest(&mut s, 5);
    // Node size.
    let v = "v".repeat(2000);
    assert_eq!(g.write(&mut s, "data/ok", &v).1, b"OK\0");
    let v = "v".repeat(2100);
    assert_eq!(g.write(&mut s, "data/big", &v).1, b"ENOSPC\0");
    assert_eq!(g.write(&mut s, "data/ok", &v).1, b"ENOSPC\0");
    s.write("/local/domain/5/data/dom0big", &v).unwrap();
    // Path length.
    let long = format!("data/{}", "p".repeat(2048));
    assert_eq!(g.write(&mut s, &long, "").1, b"EINVAL\0");
    // Permissions per node.
    assert_eq!(
        g.err(
            &mut s,
            MsgType::SetPerms,
            0,
            b"data/ok\0n5\0r1\0r2\0r3\0r4\0r6\0"
        ),
        XsError::NoSpc
    );
    g.ok(
        &mut s,
        MsgType::SetPerms,
        0,
        b"data/ok\0n5\0r1\0r2\0r3\0r4\0",
    );
    // Watches.
    for i in 0..s.quotas().watches {
        g.ok(
            &mut s,
            MsgType::Watch,
            0,
            format!("data/w{i}\0t\0").as_bytes(),
        );
    }
    assert_eq!(
        g.err(&mut s, MsgType::Watch, 0, b"data/one-more\0t\0"),
        XsError::TooBig
    );
    g.ok(&mut s, MsgType::ResetWatches, 0, b"\0");
    g.ok(&mut s, MsgType::Watch, 0, b"data/one-more\0t\0");
    // Transactions.
    let mut ids = Vec::new();
    for _ in 0..s.quotas().transactions {
        ids.push(start(&mut g, &mut s));
    }
    assert_eq!(
        g.err(&mut s, MsgType::TransactionStart, 0, b"\0"),
        XsError::NoSpc
    );
    g.ok(&mut s, MsgType::TransactionEnd, ids[0], &z("F"));
    start(&mut g, &mut s);
    // Dom0 is not limited.
    let mut d = Client::dom0(&mut s);
    for _ in 0..20 {
        start(&mut d, &mut s);
    }
}

#[test]
fn quota_transaction_nodes_and_memory() {
    let mut q = Quotas {
        transaction_nodes: 16,
        ..Quotas::default()
    };
    let mut s = Store::with_quotas(q.clone());
    populate_domain(&mut s, 5, "g", 1, 1).unwrap();
    let mut g = Client::guest(&mut s, 5);
    let t = start(&mut g, &mut s);
    let mut err = None;
    for i in 0..20 {
        let (ty, p) = g.t(&mut s, MsgType::Read, t, format!("data/x{i}\0").as_bytes());
        if ty == MsgType::Error.as_u32() && p != b"ENOENT\0" {
            err = Some(p);
            break;
        }
    }
    assert_eq!(err.as_deref(), Some(&b"ENOSPC\0"[..]));
    g.ok(&mut s, MsgType::TransactionEnd, t, &z("F"));
    assert_eq!(s.domain_usage(5).transaction_bytes, 0);

    // Memory quota.
    q.memory = 20_000;
    s.set_quotas(q);
    let mut last = Vec::new();
    for i in 0..100 {
        let (_, p) = g.write(&mut s, &format!("data/m{i}"), &"m".repeat(1000));
        last = p;
        if last != b"OK\0" {
            break;
        }
    }
    assert_eq!(last, b"ENOMEM\0");
    assert!(s.domain_usage(5).memory() <= 20_000);
}

#[test]
fn quota_defaults_match_xenstored() {
    let q = Quotas::default();
    assert_eq!(q.nodes, 1000);
    assert_eq!(q.node_size, 2048);
    assert_eq!(q.watches, 128);
    assert_eq!(q.transactions, 10);
    assert_eq!(q.transaction_nodes, 1024);
    assert_eq!(q.outstanding, 20);
    assert_eq!(q.memory, 2_621_440);
    assert_eq!(q.perms_per_node, 5);
    assert_eq!(q.path_max, 2048);
    assert_eq!(q.payload_max, 4096);
}

// ---------------------------------------------------------------- robustness

#[test]
fn fuzzed_messages_never_panic() {
    let mut s = store_with_guest(5);
    let mut g = Client::guest(&mut s, 5);
    let mut d = Client::dom0(&mut s);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces: [&[u8]; 12] = [
        b"/",
        b"data",
        b"\0",
        b"a",
        b"@releaseDomain",
        b"T",
        b"n5",
        b"r0",
        b"1",
        b"/local/domain/5",
        b"..",
        b"\xff",
    ];
    for _ in 0..20_000 {
        let ty = (rnd() % 28) as u32;
        let mut p = Vec::new();
        for _ in 0..rnd() % 6 {
            p.extend_from_slice(pieces[(rnd() % pieces.len() as u64) as usize]);
        }
        let tx = if rnd() % 4 == 0 {
            (rnd() % 5) as u32
        } else {
            0
        };
        let c = if rnd() % 2 == 0 { &mut g } else { &mut d };
        let h = Header {
            ty,
            req_id: 1,
            tx_id: tx,
            len: p.len() as u32,
        };
        s.handle_message(c.conn, &h, &p);
        while s.take_output(c.conn).is_some() {}
    }
    // Still consistent and serving.
    assert_eq!(g.ok(&mut s, MsgType::Read, 0, &z("name")), b"g5");
    assert!(s.domain_usage(5).nodes <= s.quotas().nodes);
}

/// A guest floods the store through its ring: node creation, watches,
/// transactions, events and giant messages. Quotas hold, memory stays
/// bounded, other clients are still answered.
#[test]
fn hostile_guest_flood() {
    let mem = VecMem::new(0x10000);
    let mut s = store_with_guest(5);
    populate_domain(&mut s, 6, "bystander", 1, 1).unwrap();
    let mut ring = GuestRing::new(&mut s, PAGE, 5);
    let mut g = Guest::new(&mem);
    let mut other = Client::guest(&mut s, 6);
    let mut d = Client::dom0(&mut s);
    let q = s.quotas().clone();

    let pump = |g: &mut Guest, s: &mut Store, ring: &mut GuestRing, m: Vec<u8>| {
        let mut sent = 0;
        for _ in 0..10_000 {
            sent += g.send_bytes(&m[sent..]);
            let o = ring.process(&mem, s);
            g.pull();
            g.rx.clear();
            if sent == m.len() && !o.more_work {
                break;
            }
        }
        assert_eq!(sent, m.len());
    };

    // Nodes, each with a near-maximal value.
    for i in 0..1500 {
        let p = format!("data/flood{i}\0{}", "v".repeat(1900));
        pump(
            &mut g,
            &mut s,
            &mut ring,
            encode_message(11, i, 0, p.as_bytes()),
        );
    }
    // Watches on everything, then transactions that touch many nodes.
    for i in 0..300u32 {
        let p = format!("/\0tok{i}\0");
        pump(
            &mut g,
            &mut s,
            &mut ring,
            encode_message(4, i, 0, p.as_bytes()),
        );
    }
    for i in 0..30u32 {
        pump(&mut g, &mut s, &mut ring, encode_message(6, i, 0, b"\0"));
    }
    // Events: dom0 churns a node the guest watches.
    for i in 0..2000 {
        s.write("/local/domain/5/name", format!("n{i}")).unwrap();
    }
    ring.process(&mem, &mut s);

    let u = s.domain_usage(5);
    assert!(u.nodes <= q.nodes, "{u:?}");
    assert!(u.watches <= q.watches, "{u:?}");
    assert!(u.transactions <= q.transactions, "{u:?}");
    assert!(u.memory() <= q.memory, "{u:?}");
    assert!(s.pending_events(ring.conn()) <= q.queued_events);
    assert!(s.pending_replies(ring.conn()) <= q.outstanding);
    assert!(s.tree_bytes() < q.memory + 1_000_000);
    assert_eq!(ring.broken(), None);

    // Others are answered meanwhile.
    assert_eq!(other.ok(&mut s, MsgType::Read, 0, &z("name")), b"bystander");
    assert_eq!(
        d.ok(&mut s, MsgType::Read, 0, &z("/local/domain/6/name")),
        b"bystander"
    );
    // The guest itself still gets answers.
    g.rx.clear();
    g.send(MsgType::GetDomainPath, 0, b"5\0");
    let mut answered = false;
    for _ in 0..1000 {
        ring.process(&mem, &mut s);
        let msgs = g.messages();
        if msgs
            .iter()
            .any(|(h, p)| h.ty == MsgType::GetDomainPath.as_u32() && p == b"/local/domain/5\0")
        {
            answered = true;
            break;
        }
    }
    assert!(answered);

    // A giant message breaks only this ring.
    let h = Header {
        ty: 11,
        req_id: 1,
        tx_id: 0,
        len: 1 << 20,
    };
    g.send_bytes(&h.encode());
    ring.process(&mem, &mut s);
    assert!(matches!(ring.broken(), Some(RingError::Protocol(_))));
    assert_eq!(other.ok(&mut s, MsgType::Read, 0, &z("name")), b"bystander");
}
