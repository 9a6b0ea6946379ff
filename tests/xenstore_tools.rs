//! Debian xenstore-utils against the xenkvm store.
//!
//! The set-up fetches `xenstore-utils` and its library dependencies with
//! `apt-get download` (no system-wide install), unpacks them with
//! `dpkg-deb -x` under `resources/cache/xenstore-utils/`, starts
//! `xenkvm xenstored --socket <tmp>` and drives it with the real tools
//! (`XENSTORED_PATH` = the socket, `LD_LIBRARY_PATH` = the unpacked libs).
//! Without apt-get the tests are skipped, unless `CI` is set, where they
//! fail.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Tools {
    bin: PathBuf,
    lib_path: String,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skip (or, in CI, fail) with a reason.
fn unavailable(why: &str) -> Option<Tools> {
    if in_ci() {
        panic!("xenstore-utils unavailable in CI: {why}");
    }
    eprintln!("skipping xenstore tools tests: {why}");
    None
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/cache/xenstore-utils")
}

fn command_works(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `xenstore-utils` and its library dependencies (not libc).
fn packages() -> Vec<String> {
    let mut todo = vec!["xenstore-utils".to_string()];
    let mut seen = BTreeSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let Ok(out) = Command::new("apt-cache").args(["depends", &p]).output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(dep) = line.trim().strip_prefix("Depends: ") else {
                continue;
            };
            let dep = dep.trim();
            if dep.starts_with('<') || dep.starts_with("libc6") || dep.starts_with("libgcc") {
                continue;
            }
            if dep.starts_with("libxen") {
                todo.push(dep.to_string());
            }
        }
    }
    if seen.len() < 2 {
        // apt-cache had nothing to say: the names Debian 12 uses.
        for p in ["libxenstore4", "libxentoolcore1"] {
            seen.insert(p.to_string());
        }
    }
    seen.into_iter().collect()
}

fn find_lib_dirs(root: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            find_lib_dirs(&p, out);
        } else if e.file_name().to_string_lossy().contains(".so") {
            out.insert(root.to_path_buf());
        }
    }
}

fn tools_from(root: &Path) -> Option<Tools> {
    let bin = root.join("usr/bin");
    if !bin.join("xenstore-read").exists() {
        return None;
    }
    let mut dirs = BTreeSet::new();
    find_lib_dirs(root, &mut dirs);
    if dirs.is_empty() {
        return None;
    }
    let lib_path = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    Some(Tools { bin, lib_path })
}

fn download(pkgs: &[String], into: &Path) -> bool {
    Command::new("apt-get")
        .arg("download")
        .args(pkgs)
        .current_dir(into)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn setup_tools() -> Option<Tools> {
    let cache = cache_dir();
    let root = cache.join("root");
    if let Some(t) = tools_from(&root) {
        return Some(t);
    }
    if !command_works("apt-get", "--version") || !command_works("dpkg-deb", "--version") {
        return unavailable("apt-get or dpkg-deb not found");
    }
    let work = cache.join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = std::fs::create_dir_all(&work) {
        return unavailable(&format!("cannot create {}: {e}", work.display()));
    }
    let pkgs = packages();
    if !download(&pkgs, &work) {
        // Maybe the package lists were never fetched on this machine.
        let _ = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status();
        if !download(&pkgs, &work) {
            let _ = std::fs::remove_dir_all(&work);
            return unavailable(&format!("apt-get download {pkgs:?} failed"));
        }
    }
    let new_root = work.join("root");
    let debs: Vec<PathBuf> = std::fs::read_dir(&work)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default();
    for deb in &debs {
        let ok = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&new_root)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return unavailable(&format!("dpkg-deb -x {} failed", deb.display()));
        }
    }
    let debs_dir = cache.join("debs");
    let _ = std::fs::create_dir_all(&debs_dir);
    for deb in &debs {
        if let Some(name) = deb.file_name() {
            let _ = std::fs::rename(deb, debs_dir.join(name));
        }
    }
    // Another test process may have won the race; either tree is fine.
    let _ = std::fs::rename(&new_root, &root);
    let _ = std::fs::remove_dir_all(&work);
    match tools_from(&root) {
        Some(t) => Some(t),
        None => unavailable("unpacked packages lack xenstore-read or its libraries"),
    }
}

fn tools() -> Option<&'static Tools> {
    static TOOLS: OnceLock<Option<Tools>> = OnceLock::new();
    TOOLS.get_or_init(setup_tools).as_ref()
}

/// A running `xenkvm xenstored` on a private socket.
struct Daemon {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    tools: &'static Tools,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_timeout(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{what} did not finish in {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Daemon {
    fn start(name: &str) -> Option<Daemon> {
        let tools = tools()?;
        let dir = std::env::temp_dir().join(format!("xenkvm-xs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("xenstored.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
            .arg("xenstored")
            .arg("--socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start xenkvm xenstored");
        let d = Daemon {
            child,
            dir,
            sock,
            tools,
        };
        let start = Instant::now();
        while UnixStream::connect(&d.sock).is_err() {
            assert!(start.elapsed() < TIMEOUT, "xenstored socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(d)
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.tools.bin.join(tool));
        c.env("XENSTORED_PATH", &self.sock)
            .env("LD_LIBRARY_PATH", &self.tools.lib_path)
            .env_remove("XENSTORED_RUNDIR")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let mut child = self
            .cmd(tool)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        // Output is small: read it after exit.
        let status = wait_timeout(&mut child, tool);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Run a tool that must succeed; its stdout.
    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn code(&self, tool: &str, args: &[&str]) -> Option<i32> {
        self.run(tool, args).status.code()
    }
}

#[test]
fn tools_write_read_exists_list_rm() {
    let Some(d) = Daemon::start("rw") else { return };
    assert_eq!(
        d.ok("xenstore-read", &["/local/domain/0/name"]),
        "Domain-0\n"
    );
    d.ok(
        "xenstore-write",
        &["/vm/test/a", "1", "/vm/test/b", "two words"],
    );
    assert_eq!(d.ok("xenstore-read", &["/vm/test/a"]), "1\n");
    assert_eq!(
        d.ok("xenstore-read", &["/vm/test/a", "/vm/test/b"]),
        "1\ntwo words\n"
    );
    assert_eq!(d.ok("xenstore", &["read", "/vm/test/b"]), "two words\n");

    let miss = d.run("xenstore-read", &["/vm/nope"]);
    assert_eq!(miss.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&miss.stderr).contains("couldn't read path /vm/nope"));

    assert_eq!(d.code("xenstore-exists", &["/vm/test/a"]), Some(0));
    assert_eq!(d.code("xenstore-exists", &["/vm/test/zz"]), Some(1));
    assert_eq!(d.ok("xenstore-list", &["/vm/test"]), "a\nb\n");

    d.ok("xenstore-rm", &["/vm/test/a"]);
    assert_eq!(d.code("xenstore-exists", &["/vm/test/a"]), Some(1));
    assert_eq!(d.ok("xenstore-list", &["/vm/test"]), "b\n");
    // Removing what is already gone is fine while the parent exists.
    d.ok("xenstore-rm", &["/vm/test/a"]);
    d.ok("xenstore-rm", &["/vm/test"]);
    assert_eq!(d.code("xenstore-exists", &["/vm/test"]), Some(1));
    assert_eq!(d.code("xenstore-exists", &["/vm"]), Some(0));

    // Empty values and overwrite.
    d.ok("xenstore-write", &["/vm/e", ""]);
    assert_eq!(d.ok("xenstore-read", &["/vm/e"]), "\n");
    d.ok("xenstore-write", &["/vm/e", "again"]);
    assert_eq!(d.ok("xenstore-read", &["/vm/e"]), "again\n");
}

#[test]
fn tools_ls_formats() {
    let Some(d) = Daemon::start("ls") else { return };
    d.ok("xenstore-write", &["/t/x/y", "1", "/t/z", ""]);
    assert_eq!(
        d.ok("xenstore-ls", &["/t"]),
        "x = \"\"\n y = \"1\"\nz = \"\"\n"
    );
    assert_eq!(
        d.ok("xenstore-ls", &["-f", "/t"]),
        "/t/x = \"\"\n/t/x/y = \"1\"\n/t/z = \"\"\n"
    );
    let all = d.ok("xenstore-ls", &["-f"]);
    for line in [
        "/local/domain/0/name = \"Domain-0\"",
        "/tool/xenstored = \"\"",
        "/t/x/y = \"1\"",
    ] {
        assert!(
            all.lines().any(|l| l == line),
            "{line:?} missing from:\n{all}"
        );
    }
}

#[test]
fn tools_chmod_and_perms() {
    let Some(d) = Daemon::start("chmod") else {
        return;
    };
    d.ok("xenstore-write", &["/p/q", "v", "/p/r", "w"]);
    d.ok("xenstore-chmod", &["/p/q", "n5", "r0"]);
    let ls = d.ok("xenstore-ls", &["-fp", "/p"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("/p/q = \"v\"") && l.ends_with("(n5,r0)")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("/p/r = \"w\"") && l.ends_with("(n0)")),
        "{ls}"
    );
    d.ok("xenstore-chmod", &["-r", "/p", "b0"]);
    let ls = d.ok("xenstore-ls", &["-fp", "/p"]);
    assert_eq!(ls.lines().count(), 2);
    assert!(ls.lines().all(|l| l.ends_with("(b0)")), "{ls}");
    // A bad permission string is refused by the daemon (EINVAL).
    let bad = d.run("xenstore-chmod", &["/p/q", "x5"]);
    assert!(!bad.status.success());
}

#[test]
fn tools_watch() {
    let Some(d) = Daemon::start("watch") else {
        return;
    };
    let mut w = d
        .cmd("xenstore-watch")
        .args(["-n", "3", "/w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = w.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no watch line for {what}"))
    };
    // The immediate first event.
    assert_eq!(next("registration"), "/w");
    d.ok("xenstore-write", &["/w/x", "1"]);
    assert_eq!(next("write"), "/w/x");
    d.ok("xenstore-write", &["/elsewhere", "1"]);
    d.ok("xenstore-rm", &["/w"]);
    assert_eq!(next("rm"), "/w");
    let st = wait_timeout(&mut w, "xenstore-watch");
    assert!(st.success());
}

#[test]
fn tools_large_directory() {
    let Some(d) = Daemon::start("big") else {
        return;
    };
    // 600 children: the DIRECTORY reply would exceed 4096 bytes, so the
    // library falls back to DIRECTORY_PART.
    let kv: Vec<String> = (0..600)
        .flat_map(|i| [format!("/big/child-number-{i:04}"), format!("v{i}")])
        .collect();
    let args: Vec<&str> = kv.iter().map(String::as_str).collect();
    d.ok("xenstore-write", &args);
    let list = d.ok("xenstore-list", &["/big"]);
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(names.len(), 600);
    assert_eq!(names[0], "child-number-0000");
    assert_eq!(names[599], "child-number-0599");
    assert_eq!(d.ok("xenstore-read", &["/big/child-number-0321"]), "v321\n");
    d.ok("xenstore-rm", &["/big"]);
    assert_eq!(d.code("xenstore-exists", &["/big"]), Some(1));
}

fn msg(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [ty, req_id, 0, payload.len() as u32] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

#[test]
fn hostile_socket_clients_do_not_hurt_the_tools() {
    let Some(d) = Daemon::start("hostile") else {
        return;
    };
    // Unknown message type: an ENOSYS error reply.
    let mut raw = UnixStream::connect(&d.sock).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    raw.write_all(&msg(4242, 7, b"")).unwrap();
    let mut hdr = [0u8; 16];
    raw.read_exact(&mut hdr).unwrap();
    assert_eq!(
        u32::from_le_bytes(hdr[0..4].try_into().unwrap()),
        16,
        "XS_ERROR"
    );
    assert_eq!(u32::from_le_bytes(hdr[4..8].try_into().unwrap()), 7);
    let mut body = vec![0u8; u32::from_le_bytes(hdr[12..16].try_into().unwrap()) as usize];
    raw.read_exact(&mut body).unwrap();
    assert_eq!(body, b"ENOSYS\0");

    // An oversized message: the daemon hangs up on that client.
    raw.write_all(&[11, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        .unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(raw.read(&mut b), Ok(0) | Err(_)));

    // A client that floods requests and never reads its replies.
    let flood = UnixStream::connect(&d.sock).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let flooder = std::thread::spawn(move || {
        let mut f = flood;
        let m = msg(2, 1, b"/local/domain/0/name\0");
        let mut sent = 0usize;
        for _ in 0..200_000 {
            if f.write_all(&m).is_err() {
                break; // blocked: the daemon stopped reading us
            }
            sent += 1;
        }
        (f, sent)
    });

    // Meanwhile the tools are served normally.
    d.ok("xenstore-write", &["/still/works", "yes"]);
    assert_eq!(d.ok("xenstore-read", &["/still/works"]), "yes\n");
    let (f, _sent) = flooder.join().unwrap();
    assert_eq!(
        d.ok("xenstore-read", &["/local/domain/0/name"]),
        "Domain-0\n"
    );
    drop(f);
    assert_eq!(d.ok("xenstore-list", &["/still"]), "works\n");
    // The daemon survived all of it.
    assert_eq!(d.code("xenstore-exists", &["/local/domain/0"]), Some(0));
}

/// Run a real xenstore tool against a domain's socket.
fn tool_on(tools: &Tools, sock: &Path, tool: &str, args: &[&str]) -> Output {
    Command::new(tools.bin.join(tool))
        .args(args)
        .env("XENSTORED_PATH", sock)
        .env("LD_LIBRARY_PATH", &tools.lib_path)
        .output()
        .expect("run xenstore tool")
}

#[test]
fn booted_guest_tree_and_control_shutdown() {
    let Some(cache) = common::assets() else {
        return;
    };
    let Some(tools) = tools() else { return };
    let dir = std::env::temp_dir().join(format!("xenkvm-xs-guest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sock = dir.join("xenstored.sock");
    let mut g = common::Live::start(&common::run_args(
        &cache,
        Some("wait"),
        "256",
        &[
            "--name",
            "xstest",
            "--xenstore-socket",
            sock.to_str().unwrap(),
            // A run directory of its own: the lowest free domain id is 1.
            "--run-dir",
            dir.join("run").to_str().unwrap(),
        ],
    ));
    assert!(
        g.wait_for("XENKVM-WAITING", Duration::from_secs(300)),
        "guest did not reach init:\n{}",
        g.text()
    );
    let ls = tool_on(tools, &sock, "xenstore-ls", &["-f", "/local/domain/1"]);
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        ls.contains("/local/domain/1/name = \"xstest\""),
        "domain tree:\n{ls}"
    );
    assert!(
        ls.contains("/local/domain/1/memory/target"),
        "domain tree:\n{ls}"
    );
    // The guest's xenbus wrote its shutdown features.
    let feat = tool_on(
        tools,
        &sock,
        "xenstore-read",
        &["/local/domain/1/control/feature-poweroff"],
    );
    assert_eq!(
        String::from_utf8_lossy(&feat.stdout).trim(),
        "1",
        "guest xenbus did not write its features:\n{ls}"
    );
    let w = tool_on(
        tools,
        &sock,
        "xenstore-write",
        &["/local/domain/1/control/shutdown", "poweroff"],
    );
    assert!(w.status.success(), "xenstore-write failed: {:?}", w);
    assert_eq!(
        g.wait_exit(Duration::from_secs(120)),
        Some(0),
        "guest did not power off:\n{}",
        g.text()
    );
    assert!(g.text().contains("XENKVM-GOT-POWEROFF"), "{}", g.text());
    let _ = std::fs::remove_dir_all(&dir);
}
