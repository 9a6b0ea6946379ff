//! Shared helpers for the integration tests that boot real guests.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Say that a test is skipped and why: on stderr (`SKIP: ...`), and in the
/// file `XENKVM_SKIP_LOG` names, from which scripts/test prints its skip
/// summary (cargo hides a passing test's stderr).
pub fn skip(why: &str) {
    eprintln!("SKIP: {why}");
    if let Ok(path) = std::env::var("XENKVM_SKIP_LOG") {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let exe = std::env::args().next().unwrap_or_default();
        let bin = std::path::Path::new(&exe)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('-').map(|(b, _)| b))
            .unwrap_or("?")
            .to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            use std::io::Write;
            let _ = writeln!(f, "{bin}::{test}: {why}");
        }
    }
}

/// The asset cache, or None (with a message) when the test must be skipped.
/// In CI a missing prerequisite is a failure, never a skip.
pub fn assets() -> Option<PathBuf> {
    if !std::path::Path::new("/dev/kvm").exists() {
        assert!(!in_ci(), "CI=true but /dev/kvm is absent");
        skip("/dev/kvm is absent");
        return None;
    }
    let cache = std::env::var("XENKVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("resources/cache"));
    if !cache.join("vmlinuz").exists() {
        assert!(
            !in_ci(),
            "CI=true but guest assets are missing: run resources/get-assets.sh"
        );
        skip(&format!(
            "no guest assets in {}; run resources/get-assets.sh",
            cache.display()
        ));
        return None;
    }
    Some(cache)
}

/// `xenkvm run` arguments for the cached Debian kernel: an initramfs image
/// of the cache by name (`smoke` for `initramfs-smoke.cpio.gz`), the memory
/// in MiB, then `extra` flags (`--cmdline console=hvc0` unless given there).
pub fn run_args(
    cache: &std::path::Path,
    initrd: Option<&str>,
    memory: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--kernel".into(),
        cache.join("vmlinuz").display().to_string(),
    ];
    if let Some(name) = initrd {
        a.push("--initrd".into());
        a.push(
            cache
                .join(format!("initramfs-{name}.cpio.gz"))
                .display()
                .to_string(),
        );
    }
    if !extra.contains(&"--cmdline") {
        a.extend(["--cmdline".into(), "console=hvc0".into()]);
    }
    a.extend(["--memory".into(), memory.into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

pub struct RunResult {
    pub status: Option<i32>,
    pub output: String,
    pub timed_out: bool,
}

/// Run xenkvm with `args`, feeding no input, killing it after `timeout`.
pub fn xenkvm<S: AsRef<std::ffi::OsStr>>(args: &[S], timeout: Duration) -> RunResult {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xenkvm");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if start.elapsed() > timeout {
            timed_out = true;
            break terminate(&mut child);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    output.push_str(&String::from_utf8_lossy(&t_err.join().unwrap_or_default()));
    RunResult {
        status,
        output,
        timed_out,
    }
}

/// A running xenkvm whose output is collected as it arrives.
pub struct Live {
    pub child: std::process::Child,
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
    pub stdin: Option<std::process::ChildStdin>,
}

impl Live {
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Live {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xenkvm"));
        c.args(args);
        Live::from_command(c)
    }

    /// Run `cmd` (a xenkvm, possibly through a wrapper that execs it).
    pub fn from_command(mut cmd: Command) -> Live {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xenkvm");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take();
        Live {
            child,
            output,
            stdin,
        }
    }

    pub fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Wait until the output contains `pat`; false on timeout or exit.
    pub fn wait_for(&mut self, pat: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.text().contains(pat) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                return self.text().contains(pat);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn send(&mut self, data: &str) {
        use std::io::Write;
        if let Some(s) = self.stdin.as_mut() {
            let _ = s.write_all(data.as_bytes());
            let _ = s.flush();
        }
    }

    /// Wait for exit; kills after `timeout`. Returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                return st.code();
            }
            if start.elapsed() > timeout {
                terminate(&mut self.child);
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Stop a xenkvm the way a user would (SIGTERM: it stops its guest and
/// removes its run-directory files), SIGKILL if it lingers; its exit code.
pub fn terminate(child: &mut std::process::Child) -> Option<i32> {
    if let Ok(Some(st)) = child.try_wait() {
        return st.code();
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok().and_then(|s| s.code())
}

/// Files and directories left in run directory `run` other than its empty
/// top-level directories (`domains`, `ids`, `new`, `runs`, `dumps`).
pub fn leftovers(run: &std::path::Path) -> Vec<String> {
    fn walk(p: &std::path::Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(p) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(run, &mut out);
    let structure: Vec<String> = ["domains", "ids", "new", "runs", "dumps"]
        .iter()
        .map(|d| run.join(d).display().to_string())
        .collect();
    out.retain(|p| !structure.contains(p));
    out.sort();
    out
}

/// A network namespace of the test's own (guests' taps are made there, never
/// among the machine's interfaces); deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("xkv-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            o.status.success(),
            "ip netns add: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Netns(name)
    }

    /// `xenkvm` to be run inside the namespace.
    pub fn xenkvm(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, env!("CARGO_BIN_EXE_xenkvm")]);
        c
    }

    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.0, "link", "show", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
