//! The control API's HTTP server keeps every client bounded: the request
//! head (431), the body (413), the time a request may take to arrive
//! (408) and the number of requests served at once. None of these needs
//! /dev/kvm: the server runs over a fake backend.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use api::control::client::Client;
use api::control::server::{self, ApiServer, Limits, MAX_HEAD};
use api::control::{ApiError, Backend, ConsoleInfo, CreateRequest, DomainInfo, DomainOp};

/// No domains; `list` waits while `gate` is closed and counts callers.
#[derive(Default)]
struct Fake {
    gate: Mutex<bool>,
    opened: Condvar,
    inside: AtomicUsize,
    most_inside: AtomicUsize,
}

impl Fake {
    fn closed() -> Fake {
        Fake {
            gate: Mutex::new(true),
            ..Default::default()
        }
    }

    fn open(&self) {
        *self.gate.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

impl Backend for Fake {
    fn list(&self) -> Vec<DomainInfo> {
        let n = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(n, Ordering::SeqCst);
        let mut closed = self.gate.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Vec::new()
    }
    fn create(&self, _: CreateRequest) -> Result<DomainInfo, ApiError> {
        Err(ApiError::Conflict("no".into()))
    }
    fn info(&self, d: &str) -> Result<DomainInfo, ApiError> {
        Err(ApiError::unknown_domain(d))
    }
    fn op(&self, d: &str, _: DomainOp) -> Result<DomainInfo, ApiError> {
        Err(ApiError::unknown_domain(d))
    }
    fn console(&self, d: &str) -> Result<ConsoleInfo, ApiError> {
        Err(ApiError::unknown_domain(d))
    }
}

struct Server {
    srv: ApiServer,
    dir: PathBuf,
    sock: PathBuf,
}

impl Server {
    fn start(name: &str, backend: Arc<Fake>, limits: Limits) -> Server {
        let dir = std::env::temp_dir().join(format!("xenkvm-http-{}-{name}", std::process::id()));
        let sock = dir.join("api.sock");
        let srv = server::serve_with(&sock, backend, limits).expect("serve");
        Server { srv, dir, sock }
    }

    /// A normal request still gets its answer.
    fn still_serves(&self) {
        let c = Client::new(&self.sock);
        assert_eq!(c.version().expect("version").api, "v1");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.srv.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn quick() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Connect, let `send` write (its errors are expected when the server
/// closes early), read the answer until the server closes, and return the
/// status (`None` if it closed without one), the error message and the
/// time from connecting to the close.
fn exchange(
    sock: &Path,
    send: impl FnOnce(&mut UnixStream) -> std::io::Result<()>,
) -> (Option<u16>, String, Duration) {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    let _ = send(&mut s);
    let mut out = Vec::new();
    // A reset after the answer is an error here; the answer is in `out`.
    if let Err(e) = s.read_to_end(&mut out) {
        assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "server hung");
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|t| t.parse().ok());
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let msg = serde_json::from_str::<api::control::ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_default();
    (status, msg, elapsed)
}

fn proc_status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn default_limits() {
    let l = Limits::default();
    assert_eq!(l.request_timeout, Duration::from_secs(10));
    assert_eq!(l.max_concurrent, 16);
    assert_eq!(MAX_HEAD, 16 << 10);
}

#[test]
fn a_one_mib_header_line_is_431() {
    let s = Server::start("line", Arc::new(Fake::default()), Limits::default());
    let mut req = b"GET /v1/version HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.resize(req.len() + (1 << 20), b'a');
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let (status, msg, t) = exchange(&s.sock, |c| c.write_all(&req));
    assert_eq!(status, Some(431), "{msg}");
    assert!(msg.contains("larger than 16384 bytes"), "{msg}");
    assert!(t < Duration::from_secs(5), "{t:?}");
    // A request line alone over the bound, too.
    let mut line = b"GET /v1/".to_vec();
    line.resize(line.len() + (1 << 20), b'a');
    let (status, _, _) = exchange(&s.sock, |c| c.write_all(&line));
    assert_eq!(status, Some(431));
    s.still_serves();
}

#[test]
fn ten_thousand_headers_are_431() {
    let s = Server::start("many", Arc::new(Fake::default()), Limits::default());
    let mut req = b"GET /v1/version HTTP/1.1\r\nConnection: close\r\n".to_vec();
    for i in 0..10_000 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (status, msg, t) = exchange(&s.sock, |c| c.write_all(&req));
    assert_eq!(status, Some(431), "{msg}");
    assert!(t < Duration::from_secs(5), "{t:?}");
    // Within 16 KiB but over 64 fields: still 431; 64 fields are fine.
    let with = |n: usize| {
        let mut req = b"GET /v1/version HTTP/1.1\r\nConnection: close\r\n".to_vec();
        for i in 1..n {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        exchange(&s.sock, move |c| c.write_all(&req))
    };
    let (status, msg, _) = with(65);
    assert_eq!(status, Some(431), "{msg}");
    assert!(msg.contains("more than 64 header fields"), "{msg}");
    assert_eq!(with(64).0, Some(200));
    s.still_serves();
}

/// The old server kept a whole header line in memory (a 256 MiB line took
/// its peak RSS from 3 to 518 MiB); now at most MAX_HEAD of it is read.
#[test]
fn a_64_mib_header_line_does_not_grow_memory() {
    let s = Server::start("rss", Arc::new(Fake::default()), Limits::default());
    let before = proc_status_kib("VmHWM");
    let chunk = vec![b'a'; 64 << 10];
    let (status, _, _) = exchange(&s.sock, |c| {
        c.write_all(b"GET /v1/version HTTP/1.1\r\nConnection: close\r\nX-Big: ")?;
        for _ in 0..(64 * 16) {
            c.write_all(&chunk)?;
        }
        c.write_all(b"\r\n\r\n")
    });
    assert_eq!(status, Some(431));
    let grown = proc_status_kib("VmHWM").saturating_sub(before);
    assert!(grown < 16 << 10, "peak RSS grew by {grown} KiB");
    s.still_serves();
}

#[test]
fn slow_clients_are_cut_off() {
    let s = Server::start("slow", Arc::new(Fake::default()), quick());
    // Half a request line, then silence: 408 after the 1 s limit.
    let (status, msg, t) = exchange(&s.sock, |c| c.write_all(b"GET /v1/ver"));
    assert_eq!(status, Some(408), "{msg}");
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_secs(4),
        "{t:?}"
    );
    // One byte every 100 ms: each read is quick, the request is not.
    let (status, _, t) = exchange(&s.sock, |c| {
        for b in b"GET /v1/version HTTP/1.1\r\nX-Slow: "
            .iter()
            .cycle()
            .take(300)
        {
            // Fails (ending the loop) once the server has closed.
            c.write_all(&[*b])?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    assert_eq!(status, Some(408));
    assert!(t < Duration::from_secs(6), "{t:?}");
    // A body that never arrives.
    let (status, _, t) = exchange(&s.sock, |c| {
        c.write_all(b"POST /v1/domains HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}")
    });
    assert_eq!(status, Some(408));
    assert!(t < Duration::from_secs(4), "{t:?}");
    // A client that connects and sends nothing.
    let (status, _, t) = exchange(&s.sock, |_| Ok(()));
    assert_eq!(status, Some(408));
    assert!(t < Duration::from_secs(4), "{t:?}");
    s.still_serves();
}

#[test]
fn slow_clients_on_every_slot_only_delay_others() {
    let s = Server::start("slots", Arc::new(Fake::default()), quick());
    let idle: Vec<UnixStream> = (0..40)
        .map(|_| {
            let mut c = UnixStream::connect(&s.sock).unwrap();
            c.write_all(b"GET /v1/ver").unwrap();
            c
        })
        .collect();
    // 40 idle clients, 16 slots, 1 s each: served within a few seconds.
    let start = Instant::now();
    s.still_serves();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    drop(idle);
}

#[test]
fn at_most_max_concurrent_requests_at_once() {
    let fake = Arc::new(Fake::closed());
    let s = Server::start("busy", fake.clone(), Limits::default());
    let sock = s.sock.clone();
    let lists: Vec<_> = (0..20)
        .map(|_| {
            let c = Client::new(&sock);
            std::thread::spawn(move || c.list().map(|l| l.len()))
        })
        .collect();
    let start = Instant::now();
    while fake.inside.load(Ordering::SeqCst) < 16 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fake.inside.load(Ordering::SeqCst), 16);
    // The 17th connection is not served while the 16 are busy, not even a
    // request that needs no backend.
    let c = Client {
        timeout: Duration::from_millis(700),
        ..Client::new(&sock)
    };
    assert!(c.version().is_err());
    assert_eq!(fake.most_inside.load(Ordering::SeqCst), 16);
    fake.open();
    for l in lists {
        assert_eq!(l.join().unwrap().unwrap(), 0);
    }
    assert_eq!(fake.most_inside.load(Ordering::SeqCst), 16);
    s.still_serves();
}

#[test]
fn bodies_and_framing() {
    let s = Server::start("body", Arc::new(Fake::default()), Limits::default());
    let c = Client::new(&s.sock);
    // Over MAX_BODY: 413, and the client that is still sending reads it.
    let big = vec![b' '; (1 << 20) + 10];
    assert_eq!(
        c.raw("POST", "/v1/domains", Some(&big)).unwrap().status,
        413
    );
    // A body exactly at the bound reaches the routing (which dislikes it).
    let max = vec![b' '; 1 << 20];
    let r = c.raw("POST", "/v1/domains", Some(&max)).unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("malformed create request"));
    let send = |req: &'static [u8]| exchange(&s.sock, move |c| c.write_all(req));
    assert_eq!(
        send(
            b"POST /v1/domains HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        )
        .0,
        Some(501)
    );
    for bad in [
        &b"GET /v1/version HTTP/1.1\r\nContent-Length: -5\r\n\r\n"[..],
        b"GET /v1/version HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /v1/version HTTP/1.1\r\nContent-Length: +2\r\n\r\nab",
        b"\x00\x01\x02\x03 GARBAGE\r\n\r\n",
        b"GET /v1/version HTTP/9.9\r\n\r\n",
    ] {
        assert_eq!(send(bad).0, Some(400), "{}", String::from_utf8_lossy(bad));
    }
    // A client that closes inside the head or the body gets no hang.
    for cut in [
        &b"GET /v1/vers"[..],
        b"POST /v1/domains HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"con",
    ] {
        let (status, _, t) = exchange(&s.sock, |c| {
            c.write_all(cut)?;
            c.shutdown(std::net::Shutdown::Write)
        });
        assert_eq!(status, Some(400));
        assert!(t < Duration::from_secs(2), "{t:?}");
    }
    // HTTP/1.0, bare line feeds, lower-case methods.
    assert_eq!(send(b"GET /v1/version HTTP/1.0\r\n\r\n").0, Some(200));
    assert_eq!(send(b"GET /v1/version HTTP/1.1\n\n").0, Some(200));
    assert_eq!(send(b"get /v1/domains HTTP/1.1\r\n\r\n").0, Some(200));
    // curl's Expect: 100-continue gets its interim answer, then the final one.
    let mut x = UnixStream::connect(&s.sock).unwrap();
    x.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    x.write_all(b"POST /v1/domains HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    x.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    x.write_all(b"{}").unwrap();
    let mut rest = String::new();
    x.read_to_string(&mut rest).unwrap();
    // The body arrived: `{}` is a create request without a config.
    assert!(rest.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{rest}");
    assert!(rest.contains("missing field `config`"), "{rest}");
    assert!(rest.contains("\r\nConnection: close\r\n"), "{rest}");
    s.still_serves();
}

#[test]
fn stop_refuses_new_connections() {
    let s = Server::start("stop", Arc::new(Fake::default()), Limits::default());
    s.still_serves();
    s.srv.stop();
    assert!(UnixStream::connect(&s.sock).is_err());
}
