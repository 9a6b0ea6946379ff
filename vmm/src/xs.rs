//! The domain's xenstore: the shared store, the guest's ring, the unix
//! socket for Xen's tools, and a pump thread that answers the guest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use xen_shim::domain::Domain;
use xen_shim::xenstore::{self, GuestRing, Store};

pub type SharedStore = Arc<Mutex<Store>>;

#[derive(Debug, thiserror::Error)]
pub enum XsError {
    #[error("xenstore: {0}")]
    Store(String),
    #[error(transparent)]
    Socket(#[from] api::xs_socket::XsSocketError),
}

/// Wakes the pump when the guest or another client gave it work.
#[derive(Default)]
struct Wake {
    pending: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Wake {
    fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }
}

pub struct XsBackend {
    pub store: SharedStore,
    ring: Mutex<Option<GuestRing>>,
    wake: Arc<Wake>,
    pub socket: Option<PathBuf>,
}

/// What the store needs to know about the domain it serves.
#[derive(Clone, Copy)]
pub struct XsDomain<'a> {
    pub domid: u32,
    pub name: &'a str,
    pub mem_kib: u64,
    pub vcpus: u32,
    pub store_gfn: u64,
    pub store_port: u32,
    pub console_gfn: u64,
    pub console_port: u32,
}

impl XsBackend {
    /// Populate the store for a domain as a toolstack would.
    pub fn new(d: &XsDomain) -> Result<XsBackend, XsError> {
        let XsDomain {
            domid,
            name,
            mem_kib,
            vcpus,
            store_gfn,
            store_port,
            console_gfn,
            console_port,
        } = *d;
        let e = |x: xenstore::XsError| XsError::Store(format!("{x:?}"));
        let mut s = Store::new();
        xenstore::populate_dom0(&mut s).map_err(e)?;
        xenstore::populate_domain(&mut s, domid, name, mem_kib, vcpus).map_err(e)?;
        xenstore::set_store_ring(&mut s, domid, store_gfn, store_port).map_err(e)?;
        xenstore::add_console(&mut s, domid, 0, console_gfn, console_port).map_err(e)?;
        s.introduce_domain(domid, store_gfn, store_port)
            .map_err(e)?;
        let ring = GuestRing::new(&mut s, store_gfn << 12, domid);
        let wake = Arc::new(Wake::default());
        let w = wake.clone();
        s.set_notifier(ring.conn(), Box::new(move || w.kick()));
        Ok(XsBackend {
            store: Arc::new(Mutex::new(s)),
            ring: Mutex::new(Some(ring)),
            wake,
            socket: None,
        })
    }

    /// Serve the store to Xen's tools on a unix socket.
    pub fn serve_socket(&mut self, path: &Path) -> Result<(), XsError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        api::xs_socket::spawn_socket_server(self.store.clone(), path)?;
        self.socket = Some(path.to_path_buf());
        Ok(())
    }

    /// The guest notified its store port (or output is queued): answer it.
    pub fn process(&self, dom: &Domain) {
        loop {
            let out = {
                let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
                let Some(r) = ring.as_mut() else { return };
                let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
                r.process(&*dom.mem, &mut s)
            };
            if out.notify_guest {
                dom.raise_port(dom.layout.store_port);
            }
            if !out.more_work {
                return;
            }
        }
    }

    /// Answer the guest in the background when other clients fire its watches.
    pub fn spawn_pump(self: &Arc<Self>, dom: Weak<Domain>) {
        let me = Arc::downgrade(self);
        let wake = self.wake.clone();
        std::thread::Builder::new()
            .name("xs-pump".into())
            .spawn(move || loop {
                {
                    let g = wake.lock.lock().unwrap_or_else(|e| e.into_inner());
                    if !wake.pending.swap(false, Ordering::SeqCst) {
                        let _ = wake
                            .cv
                            .wait_timeout(g, std::time::Duration::from_millis(200));
                        wake.pending.store(false, Ordering::SeqCst);
                    }
                }
                let (Some(me), Some(d)) = (me.upgrade(), dom.upgrade()) else {
                    return;
                };
                me.process(&d);
            })
            .ok();
    }
}

/// Where per-domain runtime files go: $XDG_RUNTIME_DIR/xenkvm, /run/xenkvm
/// for root, else the temp directory.
pub fn run_dir() -> PathBuf {
    if let Ok(d) = std::env::var("XENKVM_RUN_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(d) = std::env::var("XDG_RUNTIME_DIR") {
        return Path::new(&d).join("xenkvm");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/xenkvm");
    }
    std::env::temp_dir().join("xenkvm")
}
