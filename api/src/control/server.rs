//! The API server: [`route`] maps a request to a status and a JSON body;
//! [`serve`] runs it on a unix socket with `tiny_http`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{
    ApiError, Backend, CreateRequest, DomainOp, ErrorBody, SysrqRequest, VcpuSetRequest,
    VersionInfo, API_PREFIX,
};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

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

/// A running API server; dropping it does not stop it (see [`ApiServer::stop`]).
pub struct ApiServer {
    server: Arc<tiny_http::Server>,
    pub path: PathBuf,
}

impl ApiServer {
    /// Stop accepting requests (the socket file stays until removed).
    pub fn stop(&self) {
        self.server.unblock();
    }
}

fn respond(req: tiny_http::Request, status: u16, body: String) {
    let ct = tiny_http::Header::from_bytes("Content-Type", "application/json")
        .expect("static header is valid");
    let resp = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(ct);
    if let Err(e) = req.respond(resp) {
        log::debug!("API client went away: {e}");
    }
}

fn handle(backend: &dyn Backend, mut req: tiny_http::Request) {
    let method = req.method().as_str().to_ascii_uppercase();
    let url = req.url().to_string();
    if req.body_length().is_some_and(|n| n > MAX_BODY) {
        let (s, b) = error(&ApiError::TooLarge(format!(
            "request body larger than {MAX_BODY} bytes"
        )));
        return respond(req, s, b);
    }
    let mut body = Vec::new();
    let read = req
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    let (status, out) = match read {
        Err(e) => error(&ApiError::BadRequest(format!("reading the body: {e}"))),
        Ok(_) if body.len() > MAX_BODY => error(&ApiError::TooLarge(format!(
            "request body larger than {MAX_BODY} bytes"
        ))),
        Ok(_) => route(backend, &method, &url, &body),
    };
    log::debug!("API {method} {url} -> {status}");
    respond(req, status, out);
}

/// Serve `backend` on the unix socket `path` (replacing a stale socket file)
/// from a background thread; each request runs on its own thread, so a slow
/// operation never blocks `GET` requests.
pub fn serve(path: &Path, backend: Arc<dyn Backend>) -> Result<ApiServer, ServeError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::Bind {
            path: path.display().to_string(),
            msg: "another server is listening there".into(),
        });
    }
    let _ = std::fs::remove_file(path);
    let server = tiny_http::Server::http_unix(path).map_err(|e| ServeError::Bind {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    // Only this user may drive the domain, whatever the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            ServeError::Bind {
                path: path.display().to_string(),
                msg: e.to_string(),
            }
        })?;
    }
    let server = Arc::new(server);
    let s = server.clone();
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for req in s.incoming_requests() {
                let b = backend.clone();
                let spawned = std::thread::Builder::new()
                    .name("api-req".into())
                    .spawn(move || handle(&*b, req));
                if let Err(e) = spawned {
                    log::warn!("API: cannot start a request thread: {e}");
                }
            }
        })
        .map_err(|e| ServeError::Bind {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    Ok(ApiServer {
        server,
        path: path.to_path_buf(),
    })
}

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
        // Arbitrary bytes never panic.
        for junk in ["\u{0}", "/v1/\u{fffd}", "/v1/domains/%00/pause", "//v1//"] {
            let r = route(&f, "GET", junk, &[0xff, 0xfe]);
            assert!(r.0 >= 400 || r.0 == 200, "{junk}: {r:?}");
        }
    }
}
