//! The detachable guest console: output goes to every attached client of
//! `console.sock` (and to stdout for foreground domains), the last
//! [`HISTORY`] bytes are replayed to a client when it attaches, and bytes
//! a client writes are the guest's console input. Detaching (the client's
//! Ctrl-]) just closes the connection; the guest keeps running.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::console::{push_input, Current};

/// Bytes of output replayed to a client that attaches.
pub const HISTORY: usize = 16 << 10;
/// Output chunks queued for a client before it is dropped as too slow.
const CLIENT_QUEUE: usize = 4096;
/// Output bytes queued for a client before it is dropped as too slow
/// (whatever the size of the chunks).
pub const CLIENT_BYTES: usize = 1 << 20;
/// Clients attached at once; more are refused.
pub const MAX_CLIENTS: usize = 8;

/// One attached client's queue.
struct Client {
    tx: SyncSender<Vec<u8>>,
    /// Bytes queued and not yet written to the client.
    queued: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Inner {
    history: VecDeque<u8>,
    /// Output older than `history` was dropped.
    truncated: bool,
    clients: Vec<Client>,
}

pub struct ConsoleHub {
    inner: Mutex<Inner>,
    to_stdout: bool,
    current: Current,
    attached: AtomicU32,
}

impl ConsoleHub {
    /// `current` is the guest input goes to; `to_stdout` also copies output
    /// to this process's stdout (foreground domains).
    pub fn new(current: Current, to_stdout: bool) -> Arc<ConsoleHub> {
        Arc::new(ConsoleHub {
            inner: Mutex::new(Inner::default()),
            to_stdout,
            current,
            attached: AtomicU32::new(0),
        })
    }

    /// Clients attached now.
    pub fn clients(&self) -> u32 {
        self.attached.load(Ordering::SeqCst)
    }

    /// Guest output (called with the host's console lock held: never blocks).
    pub fn output(&self, data: &[u8]) {
        if self.to_stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.history.extend(data.iter().copied());
        let excess = g.history.len().saturating_sub(HISTORY);
        if excess > 0 {
            g.truncated = true;
            g.history.drain(..excess);
        }
        g.clients.retain(|c| {
            let queued = c.queued.load(Ordering::SeqCst);
            if queued.saturating_add(data.len()) > CLIENT_BYTES {
                log::warn!("console client too slow ({queued} bytes queued); detaching it");
                return false;
            }
            match c.tx.try_send(data.to_vec()) {
                Ok(()) => {
                    c.queued.fetch_add(data.len(), Ordering::SeqCst);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    log::warn!("console client too slow; detaching it");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// The sink to install in each boot's `Host`.
    pub fn sink(self: &Arc<Self>) -> crate::control::ConsoleSink {
        let me = self.clone();
        Arc::new(move |d: &[u8]| me.output(d))
    }

    /// Accept console clients on `path` from a background thread.
    pub fn serve(self: &Arc<Self>, path: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path)?;
        super::registry::private_socket(path)?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                for s in l.incoming() {
                    match s {
                        Ok(s) => me.attach(s),
                        Err(e) => log::warn!("console socket: {e}"),
                    }
                }
            })?;
        Ok(())
    }

    fn attach(self: &Arc<Self>, mut stream: UnixStream) {
        // Each client costs two threads and a queue: bound them.
        if self.attached.load(Ordering::SeqCst) as usize >= MAX_CLIENTS {
            log::warn!("console: {MAX_CLIENTS} clients attached already; refusing another");
            let _ = writeln!(
                stream,
                "xenkvm: {MAX_CLIENTS} console clients attached already\r"
            );
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(CLIENT_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let history: Vec<u8> = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.clients.push(Client {
                tx,
                queued: queued.clone(),
            });
            replay(&g.history, g.truncated)
        };
        self.attached.fetch_add(1, Ordering::SeqCst);
        let _ = std::thread::Builder::new()
            .name("console-out".into())
            .spawn(move || {
                if out.write_all(&history).is_err() {
                    return;
                }
                for chunk in rx {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                    queued.fetch_sub(chunk.len(), Ordering::SeqCst);
                }
            });
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                me.input_loop(stream);
                me.attached.fetch_sub(1, Ordering::SeqCst);
            });
    }

    /// Client bytes into the guest's console ring until the client leaves.
    fn input_loop(&self, mut stream: UnixStream) {
        let mut buf = [0u8; 256];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Ok(n) => n,
            };
            let Some((host, dom)) = self.current.get() else {
                continue;
            };
            let mut rest = &buf[..n];
            let mut spins = 0;
            while !rest.is_empty() && !host.stop.load(Ordering::SeqCst) && spins < 2000 {
                let k = push_input(&dom, rest);
                rest = &rest[k..];
                if k == 0 {
                    spins += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }
}

/// What a client sees on attaching: the history, from the start of a line
/// when its beginning was cut off.
fn replay(history: &VecDeque<u8>, truncated: bool) -> Vec<u8> {
    let skip = if truncated {
        history
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
    } else {
        0
    };
    history.iter().skip(skip).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_starts_at_a_line() {
        let h: VecDeque<u8> = b"ial line\nwhole line\n".iter().copied().collect();
        assert_eq!(replay(&h, true), b"whole line\n");
        assert_eq!(replay(&h, false), b"ial line\nwhole line\n");
        let hub = ConsoleHub::new(Current::default(), false);
        hub.output(&vec![b'x'; HISTORY - 3]);
        hub.output(b"\nlast\n");
        let g = hub.inner.lock().unwrap();
        assert_eq!(replay(&g.history, g.truncated), b"last\n");
    }

    #[test]
    fn clients_get_history_then_live_output() {
        let hub = ConsoleHub::new(Current::default(), false);
        let dir = std::env::temp_dir().join(format!("xenkvm-con-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("console.sock");
        hub.output(b"early ");
        hub.serve(&sock).unwrap();
        let mut c = UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // Wait until attached, then send live output.
        for _ in 0..200 {
            if hub.clients() == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        hub.output(b"late");
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 10 {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"early late");
        // Input with no guest attached is dropped without harm.
        c.write_all(b"x").unwrap();
        drop(c);
        for _ in 0..200 {
            if hub.clients() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(hub.clients(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 12 item 13: at most MAX_CLIENTS clients; the next one is told
    /// so and closed.
    #[test]
    fn clients_beyond_the_limit_are_refused() {
        let hub = ConsoleHub::new(Current::default(), false);
        let mut ends = Vec::new();
        for _ in 0..MAX_CLIENTS {
            let (a, b) = UnixStream::pair().unwrap();
            hub.attach(a);
            ends.push(b);
        }
        assert_eq!(hub.clients() as usize, MAX_CLIENTS);
        let (a, mut b) = UnixStream::pair().unwrap();
        hub.attach(a);
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut msg = String::new();
        b.read_to_string(&mut msg).unwrap();
        assert!(msg.contains("console clients attached already"), "{msg}");
        assert_eq!(hub.clients() as usize, MAX_CLIENTS);
        assert_eq!(hub.inner.lock().unwrap().clients.len(), MAX_CLIENTS);
    }

    /// Issue 12 item 13: a client that does not read is detached once
    /// CLIENT_BYTES are queued for it, however few chunks that is.
    #[test]
    fn a_client_that_does_not_read_is_detached_by_bytes() {
        let hub = ConsoleHub::new(Current::default(), false);
        let (a, _b) = UnixStream::pair().unwrap();
        hub.attach(a);
        let chunk = vec![b'x'; 16 << 10];
        // Past the socket's own buffer and CLIENT_BYTES, far below
        // CLIENT_QUEUE chunks.
        for _ in 0..(4 * CLIENT_BYTES / chunk.len()) {
            hub.output(&chunk);
        }
        assert!(hub.inner.lock().unwrap().clients.is_empty());
    }
}
