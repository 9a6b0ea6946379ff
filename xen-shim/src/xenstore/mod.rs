//! A xenstore daemon: the store semantics of Xen's xenstored, served to a
//! guest over its shared ring ([`GuestRing`]), to Xen's tools over a unix
//! socket (the `api` crate drives [`Store::handle_message`] for that), and
//! to the monitor's own backends through the in-process methods of
//! [`Store`] ([`Store::read`], [`Store::write`], [`Store::watch`],
//! [`Store::transaction_start`], ...), which act as domain 0.
//!
//! # Threading model
//!
//! [`Store`] is a plain single-threaded data structure; share it as
//! `Arc<Mutex<Store>>` and hold the lock for one operation at a time:
//!
//! * each socket client is served by its own threads (see
//!   `api::xs_socket`), which lock the store per request and send the queued
//!   output outside the lock;
//! * the monitor locks the store and calls [`GuestRing::process`] on every
//!   event-channel notification from the guest, after in-process changes
//!   that may fire the guest's watches, and again while it reports
//!   `more_work`; it notifies the guest when `notify_guest` is set;
//! * in-process watches deliver into a bounded `std::sync::mpsc::SyncSender`
//!   with `try_send`, and connection notifiers ([`Store::set_notifier`]) are
//!   called under the lock: neither may block nor lock the store.
//!
//! Nothing in here blocks, sleeps or spawns threads.
//!
//! # Wiring a guest (monitor side)
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use xen_shim::mem::VecMem;
//! use xen_shim::xenstore::{self, GuestRing, Store};
//!
//! let store = Arc::new(Mutex::new(Store::new()));
//! let mem = VecMem::new(0x10000); // the guest's memory
//! let (domid, ring_gfn, port) = (1, 0xf, 1);
//! let mut ring = {
//!     let mut s = store.lock().unwrap();
//!     xenstore::populate_dom0(&mut s).unwrap();
//!     xenstore::populate_domain(&mut s, domid, "guest", 262144, 1).unwrap();
//!     xenstore::set_store_ring(&mut s, domid, ring_gfn, port).unwrap();
//!     s.introduce_domain(domid, ring_gfn, port).unwrap(); // @introduceDomain
//!     GuestRing::new(&mut s, ring_gfn << 12, domid)
//! };
//! // A backend follows the guest's shutdown acknowledgements.
//! let events = store
//!     .lock()
//!     .unwrap()
//!     .watch_channel("/local/domain/1/control/shutdown", "ctl", 64)
//!     .unwrap();
//! // On every notification of `port` by the guest (and after the monitor
//! // wrote something the guest may watch):
//! let out = ring.process(&mem, &mut store.lock().unwrap());
//! if out.notify_guest { /* raise `port` towards the guest */ }
//! if out.more_work { /* call process again soon */ }
//! assert_eq!(events.try_recv().unwrap().path, "/local/domain/1/control/shutdown");
//! // When the domain dies:
//! let mut s = store.lock().unwrap();
//! ring.close(&mut s);
//! xenstore::destroy_domain(&mut s, domid).unwrap(); // @releaseDomain
//! ```
//!
//! # Hostile guests
//!
//! Guest bytes are parsed without panics; every failure is a Xen error
//! string in an ERROR reply. Per-domain [`Quotas`] bound what a guest can
//! make the store hold (nodes, watches, transactions, memory), queued watch
//! events per connection are bounded (extra events are dropped and
//! counted), a guest with too many unread replies is not read from, and a
//! protocol violation on the ring stops serving that ring.

pub mod conn;
pub mod domain;
pub mod quota;
pub mod ring;
pub mod store;
pub mod txn;
pub mod watch;
pub mod wire;

#[cfg(test)]
mod tests;

pub use domain::{
    add_console, add_device, destroy_domain, populate_dom0, populate_domain, populate_domain_full,
    remove_device, set_store_ring, DevicePaths, DomainSpec,
};
pub use quota::{DomainUsage, Quotas};
pub use ring::{GuestRing, RingError, RingOutcome};
pub use store::{
    domain_path, parse_perms, Access, ConnId, Perm, Store, TxId, DOMID_FIRST_RESERVED,
    INTRODUCE_DOMAIN, RELEASE_DOMAIN,
};
pub use watch::WatchEvent;
pub use wire::{FrameDecoder, FrameError, Header, MsgType, XsError};
