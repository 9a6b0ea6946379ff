//! The control API (`docs/openapi.yaml`) against real monitor processes:
//! every endpoint, with its errors, on booted guests.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::control::client::Client;
use api::control::{DomainInfo, DomainOp};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xenkvm-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// An empty monitor (`xenkvm monitor --api-socket`), killed on drop.
struct Monitor {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    run: PathBuf,
}

impl Monitor {
    fn start(run: &Path, tag: &str) -> Monitor {
        let sock = run.join(format!("{tag}.sock"));
        let log = run.join(format!("{tag}.out"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
            .arg("--run-dir")
            .arg(run)
            .args(["monitor", "--api-socket"])
            .arg(&sock)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start xenkvm monitor");
        let m = Monitor {
            child,
            sock,
            log,
            run: run.to_path_buf(),
        };
        let c = m.client();
        let start = Instant::now();
        while c.version().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "monitor did not start: {}",
                m.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn client(&self) -> Client {
        Client::new(&self.sock)
    }

    /// The monitor's log: its own file, or (once it moved into the
    /// domain's directory) every domain's log.
    fn output(&self) -> String {
        if let Ok(t) = std::fs::read_to_string(&self.log) {
            return t;
        }
        let mut all = String::new();
        for d in std::fs::read_dir(self.run.join("domains"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let t = std::fs::read_to_string(d.path().join("log")).unwrap_or_default();
            all.push_str(&format!("--- {}:\n{t}", d.path().display()));
        }
        all
    }

    /// Wait for the process to exit; its status code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON config of an xl.cfg text, as `xenkvm create -n` prints it.
fn config_json(dir: &Path, name: &str, text: &str) -> String {
    let cfg = dir.join(format!("{name}.cfg"));
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .args(["create", "-n"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn guest_cfg(cache: &Path, name: &str, image: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nmemory = 256\nvcpus = 1\nkernel = \"{}\"\nramdisk = \"{}\"\n\
         extra = \"console=hvc0\"\n{extra}",
        cache.join("vmlinuz").display(),
        cache.join(format!("initramfs-{image}.cpio.gz")).display()
    )
}

fn create_body(config_json: &str) -> Vec<u8> {
    format!("{{\"config\": {config_json}}}").into_bytes()
}

/// A console client collecting output in the background.
struct Console {
    stream: UnixStream,
    text: Arc<Mutex<String>>,
}

impl Console {
    fn attach(path: &str) -> Console {
        let stream = UnixStream::connect(path).expect("console socket");
        let mut r = stream.try_clone().unwrap();
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Console { stream, text }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn count(&self, pat: &str) -> usize {
        self.text().matches(pat).count()
    }

    fn wait_count(&self, pat: &str, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.count(pat) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).unwrap();
    }
}

fn status(c: &Client, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    let r = c.raw(method, path, body).expect("request");
    let body = String::from_utf8_lossy(&r.body).into_owned();
    if r.status >= 400 {
        let v: serde_json::Value = serde_json::from_str(&body).expect("error body is JSON");
        assert!(v["error"].is_string(), "no error message: {body}");
    }
    (r.status, body)
}

#[test]
fn api_errors_without_a_guest() {
    let run = temp_dir("errors");
    let m = Monitor::start(&run, "m");
    let c = m.client();
    assert_eq!(status(&c, "GET", "/v1/domains", None), (200, "[]".into()));
    assert_eq!(status(&c, "GET", "/v1/version", None).0, 200);
    // Unknown domain, path, operation; wrong method.
    assert_eq!(status(&c, "GET", "/v1/domains/nope", None).0, 404);
    assert_eq!(status(&c, "POST", "/v1/domains/nope/pause", None).0, 404);
    assert_eq!(status(&c, "GET", "/v1/domains/nope/console", None).0, 404);
    assert_eq!(status(&c, "POST", "/v1/domains/nope/explode", None).0, 404);
    assert_eq!(status(&c, "GET", "/nowhere", None).0, 404);
    assert_eq!(status(&c, "DELETE", "/v1/domains", None).0, 405);
    assert_eq!(status(&c, "GET", "/v1/domains/x/shutdown", None).0, 405);
    // Bad JSON, wrong shapes, invalid configs.
    assert_eq!(status(&c, "POST", "/v1/domains", Some(b"{not json")).0, 400);
    assert_eq!(status(&c, "POST", "/v1/domains", Some(b"[]")).0, 400);
    assert_eq!(status(&c, "POST", "/v1/domains", Some(b"")).0, 400);
    assert_eq!(
        status(&c, "POST", "/v1/domains/nope/pause", Some(b"{oops")).0,
        400
    );
    let cfg = config_json(
        &run,
        "bad",
        "name = \"bad\"\nmemory = 128\nkernel = \"/nonexistent/vmlinuz\"\n",
    );
    let (s, body) = status(&c, "POST", "/v1/domains", Some(&create_body(&cfg)));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("nonexistent"), "{body}");
    let bad_name = cfg.replace("\"name\": \"bad\"", "\"name\": \"../evil\"");
    let (s, body) = status(&c, "POST", "/v1/domains", Some(&create_body(&bad_name)));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("invalid domain name"), "{body}");
    let extra = format!("{{\"config\": {cfg}, \"surprise\": 1}}");
    assert_eq!(
        status(&c, "POST", "/v1/domains", Some(extra.as_bytes())).0,
        400
    );
    // Too large a body.
    let big = vec![b' '; (1 << 20) + 10];
    assert_eq!(status(&c, "POST", "/v1/domains", Some(&big)).0, 413);
    // Garbage that is not HTTP, and a client that disconnects mid-request.
    for junk in [
        &b"\x00\x01\x02\x03 GARBAGE\r\n\r\n"[..],
        b"POST /v1/domains HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"con",
        b"GET /v1/domains HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ] {
        let mut s = UnixStream::connect(&m.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Still serving, nothing was claimed.
    assert_eq!(status(&c, "GET", "/v1/domains", None), (200, "[]".into()));
    assert!(!run.join("domains/bad").exists());
    drop(m);
    let _ = std::fs::remove_dir_all(&run);
}

fn wait_info(c: &Client, name: &str, pred: impl Fn(&DomainInfo) -> bool) -> DomainInfo {
    let start = Instant::now();
    loop {
        let i = c.info(name).expect("info");
        if pred(&i) {
            return i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "state never reached: {i:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn api_endpoints_on_booted_guests() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("guests");
    let pid = std::process::id();
    let shell = format!("apishell{pid}");
    let wait = format!("apiwait{pid}");
    let mut a = Monitor::start(&run, "a");
    let mut w = Monitor::start(&run, "w");
    let shell_cfg = config_json(&run, &shell, &guest_cfg(&cache, &shell, "shell", ""));
    let wait_cfg = config_json(
        &run,
        &wait,
        &guest_cfg(&cache, &wait, "wait", "on_reboot = \"restart\"\n"),
    );

    // Create both guests; they boot in parallel.
    let (s, body) = status(
        &a.client(),
        "POST",
        "/v1/domains",
        Some(&create_body(&shell_cfg)),
    );
    assert_eq!(s, 201, "{body}\n{}", a.output());
    let ia: DomainInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(ia.name, shell);
    assert_eq!(ia.mem_mib, 256);
    let (s, body) = status(
        &w.client(),
        "POST",
        "/v1/domains",
        Some(&create_body(&wait_cfg)),
    );
    assert_eq!(s, 201, "{body}\n{}", w.output());
    let iw: DomainInfo = serde_json::from_str(&body).unwrap();
    assert_ne!(ia.id, iw.id, "ids are unique");
    // The sockets moved into the domains' directories.
    let ca = Client::new(&run.join(format!("domains/{shell}/api.sock")));
    let cw = Client::new(&run.join(format!("domains/{wait}/api.sock")));
    assert_eq!(ca.list().unwrap().len(), 1);
    assert!(run.join(format!("domains/{shell}/pid")).exists());
    assert!(run.join(format!("domains/{shell}/log")).exists());

    // A second create on a monitor that has a domain: 409.
    let (s, _) = status(&ca, "POST", "/v1/domains", Some(&create_body(&wait_cfg)));
    assert_eq!(s, 409);
    // Whatever the body (issue 17: was 400 "missing field `type`").
    let (s, body) = status(
        &ca,
        "POST",
        "/v1/domains",
        Some(br#"{"config":{"name":"x"}}"#),
    );
    assert_eq!(s, 409, "{body}");
    // A conflicting name on a fresh monitor: 409, and that monitor keeps
    // waiting for a valid create.
    let dup = Monitor::start(&run, "dup");
    let (s, body) = status(
        &dup.client(),
        "POST",
        "/v1/domains",
        Some(&create_body(&shell_cfg)),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("already exists"), "{body}");
    assert_eq!(dup.client().list().unwrap(), Vec::new());
    drop(dup);

    // Info by name and by id; unknown domain on a live socket.
    assert_eq!(ca.info(&ia.id.to_string()).unwrap().name, shell);
    assert_eq!(ca.info("nope").unwrap_err().status(), Some(404));
    assert_eq!(
        ca.op("nope", DomainOp::Pause).unwrap_err().status(),
        Some(404)
    );

    // Console: history, then input and output.
    let con = ca.console(&shell).unwrap();
    let mut ka = Console::attach(&con.socket);
    assert!(
        ka.wait_count("XENKVM-SHELL", 1, Duration::from_secs(300)),
        "shell never came up:\n{}\n{}",
        ka.text(),
        a.output()
    );
    std::thread::sleep(Duration::from_millis(500));
    ka.send("echo api-$((6*7))-ok\n");
    assert!(
        ka.wait_count("api-42-ok", 1, Duration::from_secs(60)),
        "{}",
        ka.text()
    );
    assert!(ca.console(&shell).unwrap().clients >= 1);

    // Pause and resume.
    let p = ca.op(&shell, DomainOp::Pause).unwrap();
    assert!(p.flags.paused, "{p:?}");
    assert_eq!(p.state, "--p---");
    assert_eq!(ca.info(&shell).unwrap().state, "--p---");
    ka.send("echo while-$((1+1))-paused\n");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ka.count("while-2-paused"), 0, "a paused guest ran");
    let r = ca.op(&shell, DomainOp::Resume).unwrap();
    assert!(!r.flags.paused, "{r:?}");
    assert!(
        ka.wait_count("while-2-paused", 1, Duration::from_secs(60)),
        "{}",
        ka.text()
    );
    let i = wait_info(&ca, &shell, |i| i.state == "-b----" || i.state == "r-----");
    assert!(i.time_s > 0.0, "{i:?}");
    // unpause is an alias of resume.
    assert_eq!(
        status(&ca, "POST", &format!("/v1/domains/{shell}/unpause"), None).0,
        200
    );

    // Reboot the wait guest: on_reboot = restart boots it again.
    let con = cw.console(&wait).unwrap();
    let kw = Console::attach(&con.socket);
    assert!(
        kw.wait_count("XENKVM-WAITING", 1, Duration::from_secs(300)),
        "wait guest never came up:\n{}\n{}",
        kw.text(),
        w.output()
    );
    let (s, _) = status(
        &cw,
        "POST",
        &format!("/v1/domains/{wait}/reboot"),
        Some(b"{}"),
    );
    assert_eq!(s, 202);
    assert!(
        kw.wait_count("XENKVM-GOT-REBOOT", 1, Duration::from_secs(120)),
        "{}",
        kw.text()
    );
    assert!(
        kw.wait_count("XENKVM-WAITING", 2, Duration::from_secs(300)),
        "no second boot:\n{}\n{}",
        kw.text(),
        w.output()
    );
    assert_eq!(cw.info(&wait).unwrap().boots, 2);

    // Shutdown: the guest powers off, on_poweroff = destroy ends the monitor.
    let (s, body) = status(
        &cw,
        "POST",
        &format!("/v1/domains/{}/shutdown", iw.id),
        None,
    );
    assert_eq!(s, 202, "{body}");
    assert_eq!(
        w.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{}",
        w.output()
    );
    assert!(kw.text().contains("XENKVM-GOT-POWEROFF"), "{}", kw.text());
    assert!(!run.join(format!("domains/{wait}")).exists());

    // Destroy: the monitor exits at once, the console closes.
    let (s, _) = status(&ca, "POST", &format!("/v1/domains/{shell}/destroy"), None);
    assert_eq!(s, 202);
    assert_eq!(
        a.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        a.output()
    );
    assert!(!run.join(format!("domains/{shell}")).exists());
    assert!(ca.list().is_err(), "socket still answers after destroy");
    let _ = std::fs::remove_dir_all(&run);
}
