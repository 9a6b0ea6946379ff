//! The API server: [`route`] maps a request to a status and a JSON body;
//! [`serve`] runs it on a unix socket: HTTP/1.1, one request per connection,
//! the head read with a byte bound and parsed with `httparse`.
//!
//! Nothing a client sends grows the monitor without bound: the request
//! line and headers are at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`]
//! fields (431 beyond), the body at most [`MAX_BODY`] bytes (413), the whole
//! request must arrive within [`Limits::request_timeout`] (408), and at most
//! [`Limits::max_concurrent`] requests are served at once.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    ApiError, AttachRequest, Backend, CreateRequest, DetachRequest, DomainOp, ErrorBody,
    MemoryRequest, MigrateRequest, SaveRequest, SysrqRequest, VcpuSetRequest, VersionInfo,
    API_PREFIX,
};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;
/// The request line and headers together may be at most this long (431).
pub const MAX_HEAD: usize = 16 << 10;
/// A request may have at most this many header fields (431).
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot serve the API on {path}: {msg}")]
    Bind { path: String, msg: String },
}

fn json<T: Serialize>(status: u16, v: &T) -> (u16, String) {
    match serde_json::to_string(v) {
        Ok(s) => (status, s),
        Err(e) => error(&ApiError::Internal(format!("encoding the answer: {e}"))),
    }
}

fn error(e: &ApiError) -> (u16, String) {
    let body = ErrorBody {
        error: e.to_string(),
    };
    (
        e.status(),
        serde_json::to_string(&body).unwrap_or_else(|_| "{\"error\":\"?\"}".into()),
    )
}

/// A body for an operation must be empty or a JSON object (reserved for
/// options); anything else is a client error.
fn check_options(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
    }
}

fn no_method(method: &str, path: &str) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {path}"))
}

/// `%XX` escapes in one path segment (invalid escapes stay as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET`/`POST /v1/domains/{dom}/disks|nics`.
fn device_list_or_attach(
    backend: &dyn Backend,
    method: &str,
    path: &str,
    dom: &str,
    kind: &str,
    body: &[u8],
) -> Result<(u16, String), ApiError> {
    match (method, kind) {
        ("GET", "disks") => backend.disks(dom).map(|v| json(200, &v)),
        ("GET", _) => backend.nics(dom).map(|v| json(200, &v)),
        ("POST", _) => {
            let req = serde_json::from_slice::<AttachRequest>(body)
                .map_err(|e| ApiError::BadRequest(format!("malformed attach request: {e}")))?;
            if kind == "disks" {
                backend.disk_attach(dom, &req.spec).map(|v| json(201, &v))
            } else {
                backend.nic_attach(dom, &req.spec).map(|v| json(201, &v))
            }
        }
        _ => Err(no_method(method, path)),
    }
}

/// `POST /v1/domains/{dom}/disks|nics/{id}/detach` (an empty body is
/// `{}`).
fn device_detach(
    backend: &dyn Backend,
    dom: &str,
    kind: &str,
    id: &str,
    body: &[u8],
) -> Result<(u16, String), ApiError> {
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        DetachRequest::default()
    } else {
        serde_json::from_slice::<DetachRequest>(body)
            .map_err(|e| ApiError::BadRequest(format!("malformed detach request: {e}")))?
    };
    let r = if kind == "disks" {
        backend.disk_detach(dom, id, &req)
    } else {
        backend.nic_detach(dom, id, &req)
    };
    r.map(|()| json(200, &serde_json::json!({})))
}

/// Answer one request: `(HTTP status, JSON body)`. Never panics on any input.
pub fn route(backend: &dyn Backend, method: &str, url: &str, body: &[u8]) -> (u16, String) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return error(&ApiError::NotFound(format!("no such path: {path}")));
    };
    let decoded: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let r = match (method, segs.as_slice()) {
        ("GET", ["version"]) => {
            return json(
                200,
                &VersionInfo {
                    name: "xenkvm".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    api: API_PREFIX.trim_start_matches('/').into(),
                },
            )
        }
        (_, ["version"]) => Err(no_method(method, path)),
        ("GET", ["domains"]) => return json(200, &backend.list()),
        ("POST", ["domains"]) => match backend.list().first() {
            // A monitor runs one domain: whatever the body, creating
            // another here conflicts with it.
            Some(d) => Err(ApiError::Conflict(format!(
                "this socket already serves domain '{}' (id {})",
                d.name, d.id
            ))),
            None => match serde_json::from_slice::<CreateRequest>(body) {
                Ok(req) => backend.create(req).map(|i| json(201, &i)),
                Err(e) => Err(ApiError::BadRequest(format!(
                    "malformed create request: {e}"
                ))),
            },
        },
        (_, ["domains"]) => Err(no_method(method, path)),
        ("GET", ["domains", dom]) => backend.info(dom).map(|i| json(200, &i)),
        (_, ["domains", _]) => Err(no_method(method, path)),
        ("GET", ["domains", dom, "console"]) => backend.console(dom).map(|c| json(200, &c)),
        (_, ["domains", _, "console"]) => Err(no_method(method, path)),
        ("GET", ["domains", dom, "vcpus"]) => backend.vcpus(dom).map(|v| json(200, &v)),
        ("POST", ["domains", dom, "vcpus"]) => {
            match serde_json::from_slice::<VcpuSetRequest>(body) {
                Ok(req) => backend.vcpu_set(dom, req.count).map(|i| json(200, &i)),
                Err(e) => Err(ApiError::BadRequest(format!(
                    "malformed vcpus request: {e}"
                ))),
            }
        }
        (_, ["domains", _, "vcpus"]) => Err(no_method(method, path)),
        ("POST", ["domains", dom, "sysrq"]) => match serde_json::from_slice::<SysrqRequest>(body) {
            Ok(req) => req
                .key()
                .and_then(|k| backend.sysrq(dom, k))
                .map(|i| json(200, &i)),
            Err(e) => Err(ApiError::BadRequest(format!(
                "malformed sysrq request: {e}"
            ))),
        },
        (_, ["domains", _, "sysrq"]) => Err(no_method(method, path)),
        ("POST", ["domains", dom, "memory"]) => {
            match serde_json::from_slice::<MemoryRequest>(body) {
                Ok(MemoryRequest {
                    target_mib: None,
                    max_mib: None,
                }) => Err(ApiError::BadRequest(
                    "memory request: give target_mib and/or max_mib".into(),
                )),
                Ok(req) => backend.memory(dom, &req).map(|i| json(200, &i)),
                Err(e) => Err(ApiError::BadRequest(format!(
                    "malformed memory request: {e}"
                ))),
            }
        }
        (_, ["domains", _, "memory"]) => Err(no_method(method, path)),
        ("POST", ["domains", dom, "save"]) => match serde_json::from_slice::<SaveRequest>(body) {
            Ok(req) => backend.save(dom, &req).map(|i| json(200, &i)),
            Err(e) => Err(ApiError::BadRequest(format!("malformed save request: {e}"))),
        },
        (_, ["domains", _, "save"]) => Err(no_method(method, path)),
        ("POST", ["domains", dom, "migrate"]) => {
            match serde_json::from_slice::<MigrateRequest>(body) {
                Ok(req) => backend.migrate(dom, &req).map(|i| json(200, &i)),
                Err(e) => Err(ApiError::BadRequest(format!(
                    "malformed migrate request: {e}"
                ))),
            }
        }
        (_, ["domains", _, "migrate"]) => Err(no_method(method, path)),
        (_, ["domains", dom, kind @ ("disks" | "nics")]) => {
            device_list_or_attach(backend, method, path, dom, kind, body)
        }
        (m, ["domains", dom, kind @ ("disks" | "nics"), id, "detach"]) => {
            if m != "POST" {
                Err(no_method(m, path))
            } else {
                device_detach(backend, dom, kind, id, body)
            }
        }
        (m, ["domains", dom, op]) => match DomainOp::parse(op) {
            None => Err(ApiError::NotFound(format!("no such operation: {op}"))),
            Some(_) if m != "POST" => Err(no_method(m, path)),
            Some(op) => check_options(body).and_then(|()| {
                let status = if op.is_async() { 202 } else { 200 };
                backend.op(dom, op).map(|i| json(status, &i))
            }),
        },
        _ => Err(ApiError::NotFound(format!("no such path: {path}"))),
    };
    r.unwrap_or_else(|e| error(&e))
}

/// Limits of a running server (see [`serve_with`]); [`Limits::default`] is
/// what the monitor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A whole request (head and body) must arrive within this; a client
    /// that is slower gets 408 and the connection is closed. Writing the
    /// answer has the same bound.
    pub request_timeout: Duration,
    /// Requests served at once, each on its own thread. When all are busy,
    /// the server accepts no more connections until one finishes: further
    /// clients wait in the socket's listen backlog (the kernel's, bounded).
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_timeout: Duration::from_secs(10),
            max_concurrent: 16,
        }
    }
}

/// Why a request could not be read; every variant but [`HttpError::Closed`]
/// is answered with its status and an [`ErrorBody`] before the connection
/// is closed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request line and headers larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("Transfer-Encoding is not supported; send Content-Length")]
    TransferEncoding,
    #[error("the request did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("the client closed the connection before sending a request")]
    Closed,
    #[error("reading the request: {0}")]
    Io(#[source] std::io::Error),
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::Malformed(_) | HttpError::Io(_) | HttpError::Closed => 400,
            HttpError::BodyTooLarge => 413,
            HttpError::TransferEncoding => 501,
            HttpError::Timeout(_) => 408,
        }
    }

    /// The client may still be sending: drain before closing, so that it
    /// reads the answer rather than a reset.
    fn input_pending(&self) -> bool {
        !matches!(
            self,
            HttpError::Timeout(_) | HttpError::Closed | HttpError::Io(_)
        )
    }
}

/// One request as read from the socket.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// After an error answer, discard what the client still sends for at most
/// this long and this many bytes, then close.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 * MAX_BODY as u64;

/// Time left before `deadline`, or [`HttpError::Timeout`].
fn remaining(deadline: Instant, limit: Duration) -> Result<Duration, HttpError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(HttpError::Timeout(limit))
}

/// One `read` that returns by `deadline`.
fn read_by(
    s: &mut UnixStream,
    buf: &mut [u8],
    deadline: Instant,
    limit: Duration,
) -> Result<usize, HttpError> {
    loop {
        s.set_read_timeout(Some(remaining(deadline, limit)?))
            .map_err(HttpError::Io)?;
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HttpError::Timeout(limit))
            }
            Err(e) => return Err(HttpError::Io(e)),
        }
    }
}

/// Where the head in `buf` ends (after its empty line), looking only at
/// the bytes from `from` on for the line feed that ends it.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from.max(1)..buf.len()).find_map(|i| {
        let blank = buf[i] == b'\n'
            && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'));
        blank.then_some(i + 1)
    })
}

/// Read one request: a head of at most [`MAX_HEAD`] bytes and
/// [`MAX_HEADERS`] fields, parsed with `httparse`, then a body of at most
/// [`MAX_BODY`] bytes (`Content-Length`), all by `deadline`.
fn read_request(
    s: &mut UnixStream,
    deadline: Instant,
    limit: Duration,
) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let room = MAX_HEAD.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Err(HttpError::HeadTooLarge);
        }
        let n = read_by(s, &mut chunk[..room], deadline, limit)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                HttpError::Closed
            } else {
                HttpError::Malformed("the connection closed inside the request head".into())
            });
        }
        let from = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, from) {
            break end;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Malformed("incomplete request head".into()))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    }
    let method = req.method.unwrap_or("").to_ascii_uppercase();
    let path = req.path.unwrap_or("").to_string();
    let mut length: Option<u64> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = value();
            let n = v
                .parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| HttpError::Malformed(format!("bad Content-Length '{v}'")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value().eq_ignore_ascii_case("100-continue");
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY as u64 {
        return Err(HttpError::BodyTooLarge);
    }
    // At most MAX_BODY from here on.
    let length = length as usize;
    let mut body = buf.split_off(end);
    body.truncate(length);
    if body.len() < length && expect_continue {
        let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        let n = read_by(s, &mut chunk[..want], deadline, limit)?;
        if n == 0 {
            return Err(HttpError::Malformed(format!(
                "the connection closed after {} of {length} body bytes",
                body.len()
            )));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request { method, path, body })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "",
    }
}

/// Write the answer (one request per connection: `Connection: close`).
fn respond(s: &mut UnixStream, status: u16, body: &str) {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    if let Err(e) = s.write_all(&out) {
        log::debug!("API client went away: {e}");
    }
}

/// Close after an error answer without resetting a client that is still
/// sending: stop writing, discard its input for a bounded time and size.
fn linger(s: &mut UnixStream, limit: Duration) {
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER.min(limit);
    let mut chunk = [0u8; 8192];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match read_by(s, &mut chunk, deadline, limit) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

/// Serve one connection: one request, one answer, then close.
fn handle(backend: &dyn Backend, mut s: UnixStream, limits: Limits) {
    let limit = limits.request_timeout;
    let deadline = Instant::now() + limit;
    if let Err(e) = s.set_write_timeout(Some(limit)) {
        log::debug!("API: cannot set a write timeout: {e}");
        return;
    }
    match read_request(&mut s, deadline, limit) {
        Ok(req) => {
            let (status, out) = route(backend, &req.method, &req.path, &req.body);
            log::debug!("API {} {} -> {status}", req.method, req.path);
            respond(&mut s, status, &out);
        }
        Err(HttpError::Closed) => {}
        Err(e) => {
            log::debug!("API: refused a request: {e}");
            let body = serde_json::to_string(&ErrorBody {
                error: e.to_string(),
            })
            .unwrap_or_else(|_| "{\"error\":\"?\"}".into());
            respond(&mut s, e.status(), &body);
            if e.input_pending() {
                linger(&mut s, limit);
            }
        }
    }
}

/// The request threads in use, and whether the server was stopped.
struct Slots {
    busy: Mutex<usize>,
    freed: Condvar,
    stopped: AtomicBool,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for a free slot and take it; `None` once stopped.
    fn take(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut busy = self.lock();
        while *busy >= max.max(1) && !self.stopped.load(Ordering::Acquire) {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        *busy += 1;
        Some(Slot(self.clone()))
    }
}

/// One request thread's place; freed when dropped.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.0.lock();
        *busy = busy.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// A running API server; dropping it does not stop it (see [`ApiServer::stop`]).
pub struct ApiServer {
    listener: Arc<UnixListener>,
    slots: Arc<Slots>,
    pub path: PathBuf,
}

impl ApiServer {
    /// Stop accepting requests: connecting fails from now on (the socket
    /// file stays until removed); requests being served finish.
    pub fn stop(&self) {
        self.slots.stopped.store(true, Ordering::Release);
        {
            let _busy = self.slots.lock();
            self.slots.freed.notify_all();
        }
        // shutdown(2) on the listening socket wakes the blocked accept (it
        // fails with EINVAL) and refuses new connections. std has no
        // shutdown for a listener, so call it through a duplicate of its
        // descriptor seen as a stream: shutdown acts on the socket.
        match self.listener.try_clone() {
            Ok(dup) => {
                let s = UnixStream::from(OwnedFd::from(dup));
                if let Err(e) = s.shutdown(Shutdown::Both) {
                    log::warn!("API: stopping the listener: {e}");
                }
            }
            Err(e) => log::warn!("API: stopping the listener: {e}"),
        }
    }
}

impl ApiServer {
    /// After [`Self::stop`]: wait, at most `limit`, for the requests being
    /// served to be answered (a `save` answers as the domain ends).
    pub fn drain(&self, limit: Duration) {
        let end = Instant::now() + limit;
        let mut busy = self.slots.lock();
        while *busy > 0 && Instant::now() < end {
            busy = match self
                .slots
                .freed
                .wait_timeout(busy, Duration::from_millis(20))
            {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

fn accept_loop(
    listener: &UnixListener,
    slots: &Arc<Slots>,
    backend: &Arc<dyn Backend>,
    limits: Limits,
) {
    while let Some(slot) = slots.take(limits.max_concurrent) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if slots.stopped.load(Ordering::Acquire) => return,
            Err(e) => {
                if e.kind() != ErrorKind::ConnectionAborted && e.kind() != ErrorKind::Interrupted {
                    // Out of descriptors or memory: do not spin.
                    log::warn!("API: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        if slots.stopped.load(Ordering::Acquire) {
            return;
        }
        let b = backend.clone();
        let spawned = std::thread::Builder::new()
            .name("api-req".into())
            .spawn(move || {
                let _slot = slot;
                handle(&*b, stream, limits);
            });
        if let Err(e) = spawned {
            log::warn!("API: cannot start a request thread: {e}");
        }
    }
}

/// [`serve_with`] the default [`Limits`].
pub fn serve(path: &Path, backend: Arc<dyn Backend>) -> Result<ApiServer, ServeError> {
    serve_with(path, backend, Limits::default())
}

/// Serve `backend` on the unix socket `path` (replacing a stale socket file)
/// from a background thread; each request runs on its own thread (at most
/// `limits.max_concurrent` at once), so a slow operation never blocks `GET`
/// requests.
pub fn serve_with(
    path: &Path,
    backend: Arc<dyn Backend>,
    limits: Limits,
) -> Result<ApiServer, ServeError> {
    let bind_err = |msg: String| ServeError::Bind {
        path: path.display().to_string(),
        msg,
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if UnixStream::connect(path).is_ok() {
        return Err(bind_err("another server is listening there".into()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| bind_err(e.to_string()))?;
    // Only this user may drive the domain, whatever the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| bind_err(e.to_string()))?;
    }
    let listener = Arc::new(listener);
    let slots = Arc::new(Slots {
        busy: Mutex::new(0),
        freed: Condvar::new(),
        stopped: AtomicBool::new(false),
    });
    let (l, s) = (listener.clone(), slots.clone());
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || accept_loop(&l, &s, &backend, limits))
        .map_err(|e| bind_err(e.to_string()))?;
    Ok(ApiServer {
        listener,
        slots,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod save_tests;

#[cfg(test)]
mod tests {
    use super::super::{ConsoleInfo, DomainInfo, DomainState};
    use super::*;
    use std::sync::Mutex;

    /// One domain named `web` with id 3, or none before create.
    struct Fake {
        dom: Mutex<Option<DomainInfo>>,
        ops: Mutex<Vec<DomainOp>>,
        keys: Mutex<Vec<char>>,
    }

    fn info(name: &str) -> DomainInfo {
        DomainInfo {
            id: 3,
            name: name.into(),
            uuid: "u".into(),
            state: DomainState::default().letters(),
            flags: DomainState::default(),
            mem_mib: 256,
            maxmem_mib: 256,
            vcpus: 1,
            max_vcpus: 1,
            time_s: 0.0,
            pid: 1,
            started: 0,
            boots: 1,
            on_poweroff: "destroy".into(),
            on_reboot: "restart".into(),
            on_crash: "destroy".into(),
            dir: String::new(),
            xenstore_socket: String::new(),
            console_socket: String::new(),
            log: String::new(),
        }
    }

    impl Fake {
        fn find(&self, dom: &str) -> Result<DomainInfo, ApiError> {
            let d = self.dom.lock().unwrap();
            match &*d {
                Some(i) if super::super::matches_domain(dom, i.id, &i.name) => Ok(i.clone()),
                _ => Err(ApiError::unknown_domain(dom)),
            }
        }
    }

    impl Backend for Fake {
        fn list(&self) -> Vec<DomainInfo> {
            self.dom.lock().unwrap().iter().cloned().collect()
        }
        fn create(&self, req: CreateRequest) -> Result<DomainInfo, ApiError> {
            let mut d = self.dom.lock().unwrap();
            if d.is_some() {
                return Err(ApiError::Conflict("exists".into()));
            }
            *d = Some(info(&req.config.name));
            Ok(d.clone().unwrap())
        }
        fn info(&self, dom: &str) -> Result<DomainInfo, ApiError> {
            self.find(dom)
        }
        fn op(&self, dom: &str, op: DomainOp) -> Result<DomainInfo, ApiError> {
            let i = self.find(dom)?;
            self.ops.lock().unwrap().push(op);
            Ok(i)
        }
        fn console(&self, dom: &str) -> Result<ConsoleInfo, ApiError> {
            self.find(dom).map(|_| ConsoleInfo {
                socket: "/c".into(),
                clients: 0,
            })
        }
        fn vcpu_set(&self, dom: &str, count: u32) -> Result<DomainInfo, ApiError> {
            let mut i = self.find(dom)?;
            i.vcpus = count;
            Ok(i)
        }
        fn sysrq(&self, dom: &str, key: char) -> Result<DomainInfo, ApiError> {
            let i = self.find(dom)?;
            self.keys.lock().unwrap().push(key);
            Ok(i)
        }
        fn memory(&self, dom: &str, req: &MemoryRequest) -> Result<DomainInfo, ApiError> {
            let mut i = self.find(dom)?;
            if let Some(t) = req.target_mib {
                i.mem_mib = t;
            }
            if let Some(m) = req.max_mib {
                i.maxmem_mib = m;
            }
            Ok(i)
        }
    }

    fn fake() -> Fake {
        Fake {
            dom: Mutex::new(None),
            ops: Mutex::new(Vec::new()),
            keys: Mutex::new(Vec::new()),
        }
    }

    fn err_of(r: &(u16, String)) -> String {
        serde_json::from_str::<ErrorBody>(&r.1)
            .expect("error body is JSON")
            .error
    }

    #[test]
    fn device_routes() {
        let f = fake();
        *f.dom.lock().unwrap() = Some(info("web"));
        for kind in ["disks", "nics"] {
            let base = format!("/v1/domains/web/{kind}");
            assert_eq!(route(&f, "GET", &base, b""), (200, "[]".to_string()));
            assert_eq!(route(&f, "GET", "/v1/domains/x/nics", b"").0, 404);
            // A backend without hotplug says so.
            let r = route(&f, "POST", &base, br#"{"spec":"xvdb"}"#);
            assert_eq!(r.0, 404);
            assert!(err_of(&r).contains("not supported"), "{}", r.1);
            for bad in [&b""[..], b"{}", br#"{"spec":1}"#, br#"{"spec":"a","x":1}"#] {
                assert_eq!(route(&f, "POST", &base, bad).0, 400, "{bad:?}");
            }
            assert_eq!(route(&f, "PUT", &base, b"").0, 405);
            let detach = format!("{base}/xvdb/detach");
            assert_eq!(route(&f, "GET", &detach, b"").0, 405);
            assert_eq!(route(&f, "POST", &detach, b"").0, 404);
            assert_eq!(route(&f, "POST", &detach, br#"{"force":true}"#).0, 404);
            assert_eq!(route(&f, "POST", &detach, br#"{"force":1}"#).0, 400);
            assert_eq!(route(&f, "POST", &format!("{base}/xvdb"), b"").0, 404);
        }
    }

    #[test]
    fn routes_and_errors() {
        let f = fake();
        assert_eq!(route(&f, "GET", "/v1/domains", b""), (200, "[]".into()));
        let r = route(&f, "GET", "/v1/domains/web", b"");
        assert_eq!(r.0, 404);
        assert!(err_of(&r).contains("unknown domain"));
        let r = route(&f, "POST", "/v1/domains", b"{not json");
        assert_eq!(r.0, 400, "{}", r.1);
        let r = route(&f, "POST", "/v1/domains", br#"{"config": 5}"#);
        assert_eq!(r.0, 400, "{}", r.1);
        let cfg = serde_json::to_string(&crate::xlcfg::DomainConfig {
            name: "web".into(),
            ..Default::default()
        })
        .unwrap();
        let req = format!(r#"{{"config": {cfg}}}"#);
        assert_eq!(route(&f, "POST", "/v1/domains", req.as_bytes()).0, 201);
        assert_eq!(route(&f, "POST", "/v1/domains", req.as_bytes()).0, 409);
        // Issue 17: on a socket that already serves a domain, any create
        // is a conflict, not a complaint about the body.
        for body in [&b"{}"[..], br#"{"config":{"name":"web2"}}"#, b"junk"] {
            let r = route(&f, "POST", "/v1/domains", body);
            assert_eq!(r.0, 409, "{r:?}");
            assert!(err_of(&r).contains("already serves domain 'web'"), "{r:?}");
        }
        assert_eq!(route(&f, "GET", "/v1/domains/web", b"").0, 200);
        assert_eq!(route(&f, "GET", "/v1/domains/3/", b"").0, 200);
        assert_eq!(route(&f, "POST", "/v1/domains/web/pause", b"").0, 200);
        assert_eq!(route(&f, "POST", "/v1/domains/web/unpause", b"{}").0, 200);
        assert_eq!(route(&f, "POST", "/v1/domains/web/shutdown", b"").0, 202);
        assert_eq!(route(&f, "POST", "/v1/domains/web/reboot", b" ").0, 202);
        assert_eq!(route(&f, "POST", "/v1/domains/3/destroy", b"").0, 202);
        assert_eq!(
            *f.ops.lock().unwrap(),
            [
                DomainOp::Pause,
                DomainOp::Resume,
                DomainOp::Shutdown,
                DomainOp::Reboot,
                DomainOp::Destroy
            ]
        );
        assert_eq!(route(&f, "POST", "/v1/domains/web/pause", b"[1]").0, 400);
        assert_eq!(route(&f, "POST", "/v1/domains/web/pause", b"{").0, 400);
        assert_eq!(route(&f, "POST", "/v1/domains/nope/pause", b"").0, 404);
        assert_eq!(route(&f, "GET", "/v1/domains/web/pause", b"").0, 405);
        assert_eq!(route(&f, "DELETE", "/v1/domains", b"").0, 405);
        assert_eq!(route(&f, "POST", "/v1/domains/web/explode", b"").0, 404);
        assert_eq!(route(&f, "GET", "/v1/domains/web/console", b"").0, 200);
        assert_eq!(route(&f, "GET", "/v1/domains/x/console", b"").0, 404);
        assert_eq!(route(&f, "GET", "/v2/domains", b"").0, 404);
        assert_eq!(route(&f, "GET", "/v1/version", b"").0, 200);
        assert_eq!(route(&f, "GET", "", b"").0, 404);
        assert_eq!(route(&f, "GET", "/v1/domains/a/b/c/d", b"").0, 404);
        // sysrq: one key in a JSON body.
        assert_eq!(
            route(&f, "POST", "/v1/domains/web/sysrq", br#"{"key":"h"}"#).0,
            200
        );
        assert_eq!(*f.keys.lock().unwrap(), ['h']);
        for bad in [
            &b""[..],
            b"{}",
            br#"{"key":"hh"}"#,
            br#"{"key":""}"#,
            b"[1]",
        ] {
            let r = route(&f, "POST", "/v1/domains/web/sysrq", bad);
            assert_eq!(r.0, 400, "{r:?}");
        }
        assert_eq!(
            route(&f, "POST", "/v1/domains/x/sysrq", br#"{"key":"h"}"#).0,
            404
        );
        assert_eq!(route(&f, "GET", "/v1/domains/web/sysrq", b"").0, 405);
        assert_eq!(route(&f, "GET", "/v1/domains/web/vcpus", b"").0, 200);
        assert_eq!(route(&f, "GET", "/v1/domains/x/vcpus", b"").0, 404);
        let r = route(&f, "POST", "/v1/domains/web/vcpus", br#"{"count":2}"#);
        assert_eq!(r.0, 200, "{r:?}");
        for bad in [&b""[..], b"{}", br#"{"count":-1}"#, br#"{"count":"2"}"#] {
            let r = route(&f, "POST", "/v1/domains/web/vcpus", bad);
            assert_eq!(r.0, 400, "{r:?}");
        }
        assert_eq!(route(&f, "DELETE", "/v1/domains/web/vcpus", b"").0, 405);
        let r = route(
            &f,
            "POST",
            "/v1/domains/web/memory",
            br#"{"target_mib":128}"#,
        );
        assert_eq!(r.0, 200, "{r:?}");
        let r = route(&f, "POST", "/v1/domains/web/memory", br#"{"max_mib":512}"#);
        assert_eq!(r.0, 200, "{r:?}");
        for bad in [
            &b""[..],
            b"{}",
            br#"{"target_mib":-1}"#,
            br#"{"target_mib":"1g"}"#,
            br#"{"target":1}"#,
        ] {
            let r = route(&f, "POST", "/v1/domains/web/memory", bad);
            assert_eq!(r.0, 400, "{r:?}");
        }
        assert_eq!(
            route(&f, "POST", "/v1/domains/x/memory", br#"{"max_mib":1}"#).0,
            404
        );
        assert_eq!(route(&f, "GET", "/v1/domains/web/memory", b"").0, 405);
        // Arbitrary bytes never panic.
        for junk in ["\u{0}", "/v1/\u{fffd}", "/v1/domains/%00/pause", "//v1//"] {
            let r = route(&f, "GET", junk, &[0xff, 0xfe]);
            assert!(r.0 >= 400 || r.0 == 200, "{junk}: {r:?}");
        }
    }
}
