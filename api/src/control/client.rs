//! A small blocking client for the control API: one HTTP/1.1 request per
//! connection (`Connection: close`) on the domain's unix socket, responses
//! parsed with `httparse`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{
    ConsoleInfo, CreateRequest, DomainInfo, DomainOp, ErrorBody, MemoryRequest, MigrateRequest,
    SaveInfo, SaveRequest, SysrqRequest, VcpuInfo, VcpuSetRequest, VersionInfo,
};

/// Responses larger than this are refused.
const MAX_RESPONSE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("bad HTTP response from {path}: {msg}")]
    Http { path: String, msg: String },
    /// The server answered with an error status and body.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from {path}: {msg}")]
    Decode { path: String, msg: String },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A raw response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The API client for one socket.
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: PathBuf,
    pub timeout: Duration,
}

fn decode_chunked(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_txt = std::str::from_utf8(&b[..line_end]).ok()?;
        let size_txt = size_txt.split(';').next()?.trim();
        let n = usize::from_str_radix(size_txt, 16).ok()?;
        b = &b[line_end + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..n)?);
        b = b.get(n + 2..)?;
    }
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(30),
        }
    }

    pub(crate) fn path(&self) -> String {
        self.socket.display().to_string()
    }

    /// Send one request and return the raw answer, whatever its status.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| ClientError::Connect {
            path: self.path(),
            source: e,
        })?;
        let io = |e| ClientError::Io {
            path: self.path(),
            source: e,
        };
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.unwrap_or(b"");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(io)?;
        s.write_all(body).map_err(io)?;
        let mut buf = Vec::new();
        s.take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() > MAX_RESPONSE {
            return Err(ClientError::Http {
                path: self.path(),
                msg: "response too large".into(),
            });
        }
        self.parse(&buf)
    }

    fn parse(&self, buf: &[u8]) -> Result<Response, ClientError> {
        let herr = |msg: String| ClientError::Http {
            path: self.path(),
            msg,
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err(herr("truncated response".into())),
            Err(e) => return Err(herr(e.to_string())),
        };
        let status = resp.code.ok_or_else(|| herr("no status".into()))?;
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let rest = &buf[n..];
        let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            decode_chunked(rest).ok_or_else(|| herr("bad chunked body".into()))?
        } else if let Some(len) = header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| herr(format!("bad Content-Length {len}")))?;
            rest.get(..len)
                .ok_or_else(|| herr("truncated body".into()))?
                .to_vec()
        } else {
            rest.to_vec()
        };
        Ok(Response { status, body })
    }

    /// A JSON request whose success answer decodes as `T`; error statuses
    /// become [`ClientError::Api`] with the server's message.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let r = self.raw(method, path, body)?;
        if !(200..300).contains(&r.status) {
            let message = serde_json::from_slice::<ErrorBody>(&r.body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).into_owned());
            return Err(ClientError::Api {
                status: r.status,
                message,
            });
        }
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode {
            path: self.path(),
            msg: e.to_string(),
        })
    }

    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        self.call("GET", "/v1/version", None)
    }

    pub fn list(&self) -> Result<Vec<DomainInfo>, ClientError> {
        self.call("GET", "/v1/domains", None)
    }

    pub fn create(&self, req: &CreateRequest) -> Result<DomainInfo, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            path: self.path(),
            msg: e.to_string(),
        })?;
        self.call("POST", "/v1/domains", Some(&body))
    }

    pub fn info(&self, dom: &str) -> Result<DomainInfo, ClientError> {
        self.call("GET", &format!("/v1/domains/{}", segment(dom)), None)
    }

    pub fn op(&self, dom: &str, op: DomainOp) -> Result<DomainInfo, ClientError> {
        let path = format!("/v1/domains/{}/{}", segment(dom), op.as_str());
        self.call("POST", &path, Some(b"{}"))
    }

    pub fn vcpus(&self, dom: &str) -> Result<Vec<VcpuInfo>, ClientError> {
        self.call("GET", &format!("/v1/domains/{}/vcpus", segment(dom)), None)
    }

    pub fn vcpu_set(&self, dom: &str, count: u32) -> Result<DomainInfo, ClientError> {
        let body =
            serde_json::to_vec(&VcpuSetRequest { count }).map_err(|e| ClientError::Decode {
                path: self.path(),
                msg: e.to_string(),
            })?;
        let path = format!("/v1/domains/{}/vcpus", segment(dom));
        self.call("POST", &path, Some(&body))
    }

    pub fn sysrq(&self, dom: &str, key: char) -> Result<DomainInfo, ClientError> {
        let body = serde_json::to_vec(&SysrqRequest {
            key: key.to_string(),
        })
        .map_err(|e| ClientError::Decode {
            path: self.path(),
            msg: e.to_string(),
        })?;
        let path = format!("/v1/domains/{}/sysrq", segment(dom));
        self.call("POST", &path, Some(&body))
    }

    /// `xl save`: suspend the domain and write it to `path`.
    pub fn save(&self, dom: &str, req: &SaveRequest) -> Result<SaveInfo, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            path: self.path(),
            msg: e.to_string(),
        })?;
        let path = format!("/v1/domains/{}/save", segment(dom));
        self.call("POST", &path, Some(&body))
    }

    /// `xl migrate`: send the domain live to the receiver on `req.socket`.
    pub fn migrate(&self, dom: &str, req: &MigrateRequest) -> Result<SaveInfo, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            path: self.path(),
            msg: e.to_string(),
        })?;
        let path = format!("/v1/domains/{}/migrate", segment(dom));
        self.call("POST", &path, Some(&body))
    }

    /// `xl mem-set` (`target_mib`) and `xl mem-max` (`max_mib`).
    pub fn memory(&self, dom: &str, req: &MemoryRequest) -> Result<DomainInfo, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode {
            path: self.path(),
            msg: e.to_string(),
        })?;
        let path = format!("/v1/domains/{}/memory", segment(dom));
        self.call("POST", &path, Some(&body))
    }

    pub fn console(&self, dom: &str) -> Result<ConsoleInfo, ClientError> {
        self.call(
            "GET",
            &format!("/v1/domains/{}/console", segment(dom)),
            None,
        )
    }
}

/// A domain name as one URL path segment (percent-encoding what needs it).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let c = Client::new(Path::new("/nonexistent"));
        let r = c
            .parse(b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\n{\"error\":\"x\"}\r\nJUNK")
            .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{\"error\":\"x\"}\r\n");
        let r = c
            .parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(c
            .parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")
            .is_err());
        assert!(c.parse(b"garbage").is_err());
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("web-01"), "web-01");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn client_and_server_over_a_socket() {
        use super::super::server;
        use super::super::{ApiError, Backend};
        struct Empty;
        impl Backend for Empty {
            fn list(&self) -> Vec<DomainInfo> {
                Vec::new()
            }
            fn create(&self, _: CreateRequest) -> Result<DomainInfo, ApiError> {
                Err(ApiError::Conflict("name taken".into()))
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
        let dir = std::env::temp_dir().join(format!("xenkvm-api-{}", std::process::id()));
        let sock = dir.join("api.sock");
        let srv = server::serve(&sock, std::sync::Arc::new(Empty)).unwrap();
        let c = Client::new(&sock);
        assert_eq!(c.list().unwrap(), Vec::new());
        assert_eq!(c.version().unwrap().api, "v1");
        let e = c.info("web").unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(e.to_string().contains("unknown domain 'web'"), "{e}");
        let e = c.op("a b", DomainOp::Pause).unwrap_err();
        assert!(e.to_string().contains("'a b'"), "{e}");
        let r = c.raw("POST", "/v1/domains", Some(b"{oops")).unwrap();
        assert_eq!(r.status, 400);
        // Garbage that is not HTTP: the server survives it.
        {
            let mut s = UnixStream::connect(&sock).unwrap();
            let _ = s.write_all(b"\x00\x01\x02 NOT HTTP\r\n\r\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        assert_eq!(c.list().unwrap(), Vec::new());
        srv.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
