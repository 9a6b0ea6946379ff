//! The xenstore unix-socket front door (xs_wire protocol) for Xen's tools.
//!
//! Point the tools at it with `XENSTORED_PATH=<socket>`. Every client of
//! the socket is privileged (domain 0), like the clients of xenstored's
//! socket; the socket file is created mode 0600.
//!
//! Threading: an accept thread, and per client a reader thread (decodes
//! requests, handles each under the store lock, then sends the queued
//! output) and a writer thread (woken through the connection's notifier
//! when watch events are queued by someone else). Output is sent outside
//! the store lock, under a per-client send lock, so a client that does not
//! read blocks only its own threads; its queued watch events are bounded
//! by the store.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use xen_shim::xenstore::{populate_dom0, ConnId, FrameDecoder, Store, XsError};

/// The store as shared between the monitor and its front doors.
pub type SharedStore = Arc<Mutex<Store>>;

/// Clients served at once; further connections are closed right away.
pub const MAX_CLIENTS: usize = 256;

/// Output bytes taken from the store per lock.
const FLUSH_BATCH: usize = 64 * 1024;

/// Errors of the socket front door.
#[derive(Debug, thiserror::Error)]
pub enum XsSocketError {
    #[error("xenstore socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("xenstore socket {path}: a server is already listening there")]
    InUse { path: String },
    #[error("xenstore socket {path}: exists and is not a socket")]
    NotASocket { path: String },
    #[error("populating the store: {0}")]
    Populate(#[from] XsError),
}

fn io_err(path: &Path, source: io::Error) -> XsSocketError {
    XsSocketError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn lock(store: &SharedStore) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bind `path`, replacing a stale socket left by a dead server.
fn bind(path: &Path) -> Result<UnixListener, XsSocketError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(XsSocketError::NotASocket {
                path: path.display().to_string(),
            });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(XsSocketError::InUse {
                path: path.display().to_string(),
            });
        }
        std::fs::remove_file(path).map_err(|e| io_err(path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io_err(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err(path, e))?;
    Ok(listener)
}

/// Serve a fresh store on `socket` until killed (`xenkvm xenstored`). The
/// store holds dom0's basics (`/local/domain/0/name = Domain-0`, `/tool`).
pub fn run_standalone(socket: &Path) -> Result<(), XsSocketError> {
    let mut store = Store::new();
    populate_dom0(&mut store)?;
    let store = Arc::new(Mutex::new(store));
    let listener = bind(socket)?;
    log::info!("xenstore: serving on {}", socket.display());
    serve(listener, store);
    Ok(())
}

/// Serve `store` on a new socket at `path` from a background thread, for
/// the life of the process.
pub fn spawn_socket_server(
    store: SharedStore,
    path: &Path,
) -> Result<JoinHandle<()>, XsSocketError> {
    let listener = bind(path)?;
    thread::Builder::new()
        .name("xs-socket".into())
        .spawn(move || serve(listener, store))
        .map_err(|e| io_err(path, e))
}

fn serve(listener: UnixListener, store: SharedStore) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("xenstore: accept: {e}");
                thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            log::warn!("xenstore: too many socket clients, refusing one");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (store, active2) = (store.clone(), active.clone());
        let spawned = thread::Builder::new()
            .name("xs-client".into())
            .spawn(move || {
                serve_client(stream, &store);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::warn!("xenstore: cannot start a client thread: {e}");
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Send everything queued for `conn`, in order.
fn flush(store: &SharedStore, conn: ConnId, out: &Mutex<UnixStream>) -> io::Result<()> {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let mut batch = Vec::new();
        {
            let mut s = lock(store);
            while batch.len() < FLUSH_BATCH {
                match s.take_output(conn) {
                    Some(m) => batch.extend_from_slice(&m),
                    None => break,
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        w.write_all(&batch)?;
    }
}

fn serve_client(stream: UnixStream, store: &SharedStore) {
    let (Ok(read_half), Ok(write_half)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let out = Arc::new(Mutex::new(write_half));
    let (wake_tx, wake_rx) = sync_channel::<()>(1);
    let conn = {
        let mut s = lock(store);
        let conn = s.connect(0, true);
        s.set_notifier(
            conn,
            Box::new(move || match wake_tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }),
        );
        conn
    };

    // Writer: sends watch events queued by other clients or the monitor.
    let writer = {
        let (store, out, stream) = (store.clone(), out.clone(), stream.try_clone());
        thread::Builder::new()
            .name("xs-client-w".into())
            .spawn(move || {
                while wake_rx.recv().is_ok() {
                    if flush(&store, conn, &out).is_err() {
                        if let Ok(s) = &stream {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                        break;
                    }
                }
            })
    };

    read_loop(read_half, store, conn, &out);

    // Dropping the connection drops the notifier, which ends the writer.
    lock(store).disconnect(conn);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let Ok(w) = writer {
        let _ = w.join();
    }
}

fn read_loop(mut input: UnixStream, store: &SharedStore, conn: ConnId, out: &Mutex<UnixStream>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            match decoder.push(data) {
                Ok((taken, msg)) => {
                    data = data.get(taken..).unwrap_or(&[]);
                    if let Some((hdr, payload)) = msg {
                        lock(store).handle_message(conn, &hdr, &payload);
                        if flush(store, conn, out).is_err() {
                            return;
                        }
                    }
                    if taken == 0 {
                        break;
                    }
                }
                Err(e) => {
                    // Like xenstored: an over-long message kills the client.
                    log::warn!("xenstore: socket client: {e}; disconnecting");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use xen_shim::xenstore::wire::{encode_message, Header, MsgType, HEADER_LEN};

    fn sock_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xs-sock-test-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir.join("xs.sock")
    }

    fn recv(s: &mut UnixStream) -> (Header, Vec<u8>) {
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).unwrap();
        let h = Header::parse(&h);
        let mut p = vec![0u8; h.len as usize];
        s.read_exact(&mut p).unwrap();
        (h, p)
    }

    fn server(name: &str) -> (SharedStore, std::path::PathBuf) {
        let mut st = Store::new();
        populate_dom0(&mut st).unwrap();
        let store = Arc::new(Mutex::new(st));
        let path = sock_path(name);
        let _ = std::fs::remove_file(&path);
        spawn_socket_server(store.clone(), &path).unwrap();
        (store, path)
    }

    fn client(path: &Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    #[test]
    fn socket_requests_and_async_watch_events() {
        let (store, path) = server("basic");
        let mut a = client(&path);
        a.write_all(&encode_message(
            MsgType::Read.as_u32(),
            7,
            0,
            b"/local/domain/0/name\0",
        ))
        .unwrap();
        let (h, p) = recv(&mut a);
        assert_eq!((h.ty, h.req_id), (MsgType::Read.as_u32(), 7));
        assert_eq!(p, b"Domain-0");
        // Watch, then a change by someone else arrives asynchronously.
        a.write_all(&encode_message(MsgType::Watch.as_u32(), 8, 0, b"/w\0tok\0"))
            .unwrap();
        assert_eq!(recv(&mut a).1, b"OK\0");
        assert_eq!(recv(&mut a).1, b"/w\0tok\0");
        lock(&store).write("/w/x", "1").unwrap();
        let (h, p) = recv(&mut a);
        assert_eq!(h.ty, MsgType::WatchEvent.as_u32());
        assert_eq!(p, b"/w/x\0tok\0");
        // Two requests in one write, split oddly.
        let mut two = encode_message(MsgType::Write.as_u32(), 9, 0, b"/k\0v");
        two.extend(encode_message(MsgType::Read.as_u32(), 10, 0, b"/k\0"));
        a.write_all(&two[..5]).unwrap();
        a.write_all(&two[5..]).unwrap();
        let mut replies = Vec::new();
        while replies.len() < 2 {
            let (h, p) = recv(&mut a);
            if h.ty != MsgType::WatchEvent.as_u32() {
                replies.push((h.req_id, p));
            }
        }
        assert_eq!(replies, vec![(9, b"OK\0".to_vec()), (10, b"v".to_vec())]);
        // Unknown type.
        a.write_all(&encode_message(99, 11, 0, b"")).unwrap();
        assert_eq!(recv(&mut a).1, b"ENOSYS\0");
    }

    #[test]
    fn oversized_message_disconnects_only_that_client() {
        let (store, path) = server("big");
        let mut bad = client(&path);
        let mut good = client(&path);
        let h = Header {
            ty: MsgType::Write.as_u32(),
            req_id: 1,
            tx_id: 0,
            len: 100_000,
        };
        bad.write_all(&h.encode()).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(bad.read(&mut b), Ok(0) | Err(_)), "closed");
        good.write_all(&encode_message(
            MsgType::Read.as_u32(),
            1,
            0,
            b"/local/domain/0/name\0",
        ))
        .unwrap();
        assert_eq!(recv(&mut good).1, b"Domain-0");
        // The bad client's connection is gone from the store (the
        // in-process one and `good` remain).
        let mut n = 0;
        for _ in 0..500 {
            n = lock(&store).connections();
            if n == 2 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn bind_refuses_live_socket_and_replaces_stale_one() {
        let (_store, path) = server("bind");
        assert!(matches!(
            spawn_socket_server(Arc::new(Mutex::new(Store::new())), &path),
            Err(XsSocketError::InUse { .. })
        ));
        let stale = sock_path("stale");
        let _ = std::fs::remove_file(&stale);
        drop(UnixListener::bind(&stale).unwrap());
        spawn_socket_server(Arc::new(Mutex::new(Store::new())), &stale).unwrap();
        UnixStream::connect(&stale).unwrap();
        let file = sock_path("file").with_file_name("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            spawn_socket_server(Arc::new(Mutex::new(Store::new())), &file),
            Err(XsSocketError::NotASocket { .. })
        ));
    }
}
