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

/// The asset cache, or None (with a message) when the test must be skipped.
/// In CI a missing prerequisite is a failure, never a skip.
pub fn assets() -> Option<PathBuf> {
    if !std::path::Path::new("/dev/kvm").exists() {
        assert!(!in_ci(), "CI=true but /dev/kvm is absent");
        eprintln!("SKIP: /dev/kvm is absent");
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
        eprintln!(
            "SKIP: no guest assets in {}; run resources/get-assets.sh",
            cache.display()
        );
        return None;
    }
    Some(cache)
}

pub struct RunResult {
    pub status: Option<i32>,
    pub output: String,
    pub timed_out: bool,
}

/// Run xenkvm with `args`, feeding no input, killing it after `timeout`.
pub fn xenkvm(args: &[&str], timeout: Duration) -> RunResult {
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
            let _ = child.kill();
            timed_out = true;
            break child.wait().ok().and_then(|s| s.code());
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
