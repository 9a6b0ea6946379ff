//! The PV network backend with a real guest: netfront on a tap in a bridge,
//! ping, and 100 MiB to a host listener with matching md5 sums.
//!
//! Everything happens in a network namespace the test creates (and deletes,
//! also on failure): the tap, the bridge and the host address live only
//! there, so the machine's own interfaces are never touched.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Option<Netns> {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Netns(name))
    }

    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(prog);
        c
    }

    fn run(&self, args: &[&str]) {
        let st = self.cmd(args[0]).args(&args[1..]).status().expect("ip");
        assert!(st.success(), "{args:?} in {}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let streams: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout")),
        Box::new(child.stderr.take().expect("stderr")),
    ];
    for mut s in streams {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    out
}

fn wait(child: &mut Child, timeout: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value after `marker` on its line.
fn field<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, r)| r.trim()))
}

/// Assets, or None (skip) outside CI when something the test needs is absent.
fn prerequisites() -> Option<PathBuf> {
    let cache = common::assets()?;
    let missing = if !cache.join("initramfs-net.cpio.gz").exists() {
        Some("initramfs-net.cpio.gz (run resources/get-assets.sh)")
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun")
    } else if !Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("the ip command")
    } else {
        None
    };
    if let Some(m) = missing {
        assert!(!common::in_ci(), "CI=true but {m} is missing");
        common::skip(&format!("{m} is missing"));
        return None;
    }
    Some(cache)
}

#[test]
fn guest_pings_and_sends_100_mib_over_a_bridged_tap() {
    let Some(cache) = prerequisites() else {
        return;
    };
    let pid = std::process::id();
    let Some(ns) = Netns::new(format!("xkt-{pid}")) else {
        assert!(!common::in_ci(), "CI=true but `ip netns add` failed");
        common::skip("cannot create a network namespace (not root?)");
        return;
    };
    ns.run(&["ip", "link", "set", "lo", "up"]);
    ns.run(&["ip", "link", "add", "xkbr0", "type", "bridge"]);
    ns.run(&["ip", "addr", "add", "10.99.0.1/24", "dev", "xkbr0"]);
    ns.run(&["ip", "link", "set", "xkbr0", "up"]);

    // The listener: busybox nc, its stdin held open (it exits on either EOF).
    let sink = std::env::temp_dir().join(format!("xkt-net-{pid}.bin"));
    let file = std::fs::File::create(&sink).expect("sink file");
    let mut listener = Guard(
        ns.cmd(cache.join("busybox"))
            .args(["nc", "-l", "-p", "5001"])
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start the listener"),
    );

    let args = common::run_args(
        &cache,
        Some("net"),
        "512",
        &[
            "--cmdline",
            "console=hvc0 xknet=10.99.0.2/24,10.99.0.1,5001 xknet.mib=100",
            "--net",
            "vifname=xkt0,bridge=xkbr0",
        ],
    );
    let mut vm = Guard(
        ns.cmd(env!("CARGO_BIN_EXE_xenkvm"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xenkvm"),
    );
    let out = collect(&mut vm.0);
    let status = wait(&mut vm.0, Duration::from_secs(900));
    let text = out.lock().unwrap().clone();
    let done = wait(&mut listener.0, Duration::from_secs(30));
    let host = Command::new(cache.join("busybox"))
        .arg("md5sum")
        .arg(&sink)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let size = std::fs::metadata(&sink).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&sink);
    let report = || format!("xenkvm status {status:?}, output:\n{text}");

    assert!(
        text.contains("XKNET-UP"),
        "eth0 never came up; {}",
        report()
    );
    assert!(text.contains("XKNET-PING-OK"), "ping failed; {}", report());
    let guest = field(&text, "XKNET-MD5 ").unwrap_or_else(|| panic!("no md5; {}", report()));
    let sent = field(&text, "XKNET-SENT ").unwrap_or_else(|| panic!("not sent; {}", report()));
    assert!(
        sent.contains("rc=0"),
        "guest nc failed: {sent}; {}",
        report()
    );
    assert!(done.is_some(), "the listener did not finish; {}", report());
    let guest_sum = guest.split_whitespace().next().unwrap_or("");
    let host_sum = host.split_whitespace().next().unwrap_or("");
    assert_eq!(size, 100 << 20, "bytes received; {}", report());
    assert_eq!(guest_sum, host_sum, "md5 guest vs host; {}", report());
    // XKNET-SENT <bytes> bytes rc=0 <centiseconds> cs
    if let Some(cs) = sent
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse::<f64>().ok())
    {
        eprintln!(
            "100 MiB guest -> host in {:.1} s ({:.2} MB/s)",
            cs / 100.0,
            104.857_6 / (cs / 100.0).max(0.01)
        );
    }
    assert_eq!(status, Some(0), "xenkvm exit; {}", report());
}
