//! Helpers for tests that create background domains and drive their
//! console: the run directory, the verbs, `list` rows, an attached console.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fresh private directory for one test's domains.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xenkvm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Run a verb with the run directory `run`.
pub fn xenkvm(run: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .arg("--run-dir")
        .arg(run)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("start xenkvm")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `list` row of `name`, split in its columns (Name ID Mem VCPUs ...).
pub fn row(run: &Path, name: &str) -> Option<Vec<String>> {
    let o = xenkvm(run, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
}

/// `xenkvm console NAME` with its stdin a pipe, output collected.
pub struct Attached {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
    queries: u32,
}

impl Attached {
    pub fn start(run: &Path, name: &str) -> Attached {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
            .arg("--run-dir")
            .arg(run)
            .args(["console", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xenkvm console");
        let out = Arc::new(Mutex::new(String::new()));
        for s in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let o = out.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut t = o.lock().unwrap();
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    // Keep the tail only: a long test prints a lot.
                    if t.len() > 1 << 20 {
                        let cut = t.len() - (1 << 19);
                        let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(0);
                        t.drain(..cut);
                    }
                }
            });
        }
        Attached {
            child,
            out,
            queries: 0,
        }
    }

    pub fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn wait_for(&self, pat: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.text().contains(pat) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn send(&mut self, data: &[u8]) {
        let s = self.child.stdin.as_mut().expect("stdin");
        s.write_all(data).unwrap();
        s.flush().unwrap();
    }

    /// Run shell `expr` in the guest (its shell on the console) and return
    /// what `echo $(expr)` printed, trimmed.
    pub fn query(&mut self, expr: &str) -> String {
        self.queries += 1;
        let tag = format!("Q{}", self.queries);
        // The echoed command line holds `Q1=$(`: only the output has `Q1=[`.
        self.send(format!("echo {tag}=[$({expr})]\n").as_bytes());
        let start = Instant::now();
        let open = format!("{tag}=[");
        while start.elapsed() < Duration::from_secs(60) {
            let t = self.text();
            if let Some(i) = t.rfind(&open) {
                let rest = &t[i + open.len()..];
                if let Some(j) = rest.find(']') {
                    let answer = rest[..j].trim();
                    if !answer.contains('$') && !answer.contains('(') {
                        return answer.to_string();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no answer to {expr:?}:\n{}", self.text());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write an xl.cfg for a busybox guest with the shell initramfs.
pub fn shell_cfg(cache: &Path, dir: &Path, name: &str, settings: &str) -> PathBuf {
    let cfg = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\n{settings}\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0 quiet\"\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-shell.cpio.gz").display()
        ),
    )
    .expect("write xl.cfg");
    cfg
}
