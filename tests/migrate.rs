//! Save, restore and live migration of a running busybox guest (issue 16):
//! a counter printed on the console and appended to a file on an ext4 PV
//! disk, plus a loop that keeps dirtying memory. The guest is saved to a
//! file (`xenkvm save`), restored (`xenkvm restore`): its counter goes on
//! where it was and the file holds every line; then it is live-migrated
//! (`xenkvm migrate --socket`) to a `xenkvm migrate-receive` with a run
//! directory of its own (another "host"), and checked the same way. Before
//! that, a migration to a receiver that refuses the domain leaves it
//! running on the source (resumed in a new domain there). One boot, two
//! vCPUs (the second checked after each move with `taskset -c 1`).

mod common;
#[path = "support/domains.rs"]
mod domains;
use domains::{text, xenkvm, Attached};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "xkmigrate";

/// Destroys the domain of a run directory when dropped (also on failure).
struct Domain(PathBuf);

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = xenkvm(&self.0, &["destroy", NAME]);
    }
}

fn ok(run: &Path, args: &[&str]) -> String {
    let o = xenkvm(run, args);
    assert!(o.status.success(), "{args:?} failed: {}", text(&o));
    text(&o)
}

/// The counter values the console shows (whole lines only: the last one
/// may still be arriving).
fn counters(out: &str) -> Vec<u64> {
    out.split("C=")
        .skip(1)
        .filter_map(|s| {
            let d: String = s.chars().take_while(char::is_ascii_digit).collect();
            let end = s[d.len()..].chars().next();
            matches!(end, Some('\r' | '\n')).then(|| d.parse().ok())?
        })
        .collect()
}

/// Attach to the domain in `run` and check that its counter goes on from
/// at least `from` and that the file on its disk has every line.
fn check_continues(run: &Path, from: u64, what: &str) -> u64 {
    let mut con = Attached::start(run, NAME);
    let seen = |con: &Attached| counters(&con.text());
    // The console may replay what the domain printed before (the same
    // monitor): the counter must reach `from + 2` and never start again.
    let start = Instant::now();
    while seen(&con).iter().all(|&c| c < from + 2) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = seen(&con);
    assert!(
        c.iter().any(|&c| c >= from + 2),
        "{what}: the counter does not go on from {from}:\n{}",
        con.text()
    );
    assert!(
        c.windows(2).all(|w| w[1] == w[0] + 1),
        "{what}: the counter started again or skipped: {c:?}\n{}",
        con.text()
    );
    // Lines in the file and its last line, read at once.
    let a = con.query("awk 'END{print NR, $0}' /mnt/count.log");
    let mut it = a.split_whitespace();
    let lines: u64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let last = it.next().unwrap_or("");
    assert_eq!(
        format!("L={lines}"),
        last,
        "{what}: the file lost lines ({a:?})"
    );
    assert!(lines >= from, "{what}: file behind the counter ({a:?})");
    // Both vCPUs run: a process pinned to vCPU 1 gets its turn.
    assert_eq!(
        con.query("taskset -c 1 sh -c 'echo on1'"),
        "on1",
        "{what}: vCPU 1"
    );
    *seen(&con).last().unwrap_or(&0)
}

#[test]
fn save_restore_and_live_migration_keep_the_guest_running() {
    let Some(cache) = common::assets() else {
        return;
    };
    let dir = domains::temp_dir("migrate");
    let run = dir.join("run");
    let run2 = dir.join("run2");
    let disk = dir.join("disk.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(cache.join("disk-root.raw"))
        .arg(&disk)
        .status()
        .expect("cp");
    assert!(st.success(), "copy of disk-root.raw");
    let cfg = dir.join("m.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{NAME}\"\nmemory = 128\nvcpus = 2\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0 quiet\"\ndisk = ['file:{},xvda,w']\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-hotplug.cpio.gz").display(),
            disk.display()
        ),
    )
    .expect("write cfg");
    let _d1 = Domain(run.clone());
    let _d2 = Domain(run2.clone());
    ok(&run, &["create", cfg.to_str().unwrap()]);
    let mut con = Attached::start(&run, NAME);
    assert!(
        con.wait_for("XKHP-READY", Duration::from_secs(120)),
        "guest did not start:\n{}",
        con.text()
    );
    assert_eq!(
        con.query("mount /dev/xvda1 /mnt && echo mounted"),
        "mounted"
    );
    con.send(
        b"exec 3>>/mnt/count.log; i=0; while true; do i=$((i+1)); echo C=$i; echo L=$i >&3; \
          sleep 1; done &\n",
    );
    con.send(
        b"while true; do dd if=/dev/urandom of=/tmp/load bs=64k count=64 2>/dev/null; done &\n",
    );
    assert!(
        con.wait_for("C=3", Duration::from_secs(60)),
        "{}",
        con.text()
    );

    // Save: the guest suspends, the file is written, the domain is gone.
    let image = dir.join("m.save");
    let out = ok(&run, &["save", NAME, image.to_str().unwrap()]);
    assert!(out.contains("saved domain"), "{out}");
    let before = *counters(&con.text()).last().unwrap();
    drop(con);
    let head = std::fs::read(&image).expect("save file");
    assert!(head.starts_with(b"Xen saved domain, xl format\n"));
    assert!(
        domains::row(&run, NAME).is_none(),
        "the saved domain is still listed"
    );

    // A truncated image is refused, and leaves no domain behind.
    let cut = dir.join("cut.save");
    std::fs::write(&cut, &head[..head.len() / 2]).expect("write cut.save");
    let o = xenkvm(&run, &["restore", cut.to_str().unwrap()]);
    assert!(!o.status.success(), "a truncated image was restored");
    assert!(text(&o).contains("ends early"), "{}", text(&o));
    assert!(
        domains::row(&run, NAME).is_none(),
        "a failed restore left a domain"
    );

    // Restore (as `xl restore CONFIG FILE`: the configuration from the
    // xl.cfg, not the file): the counter goes on, the file is whole.
    ok(
        &run,
        &["restore", cfg.to_str().unwrap(), image.to_str().unwrap()],
    );
    let after_restore = check_continues(&run, before, "after restore");
    eprintln!("counter {before} at save, {after_restore} after restore");

    // A save to a directory that does not exist is refused before the
    // guest is asked anything.
    let o = xenkvm(
        &run,
        &["save", NAME, dir.join("no/such/dir").to_str().unwrap()],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        domains::row(&run, NAME).is_some(),
        "refused save lost the domain"
    );

    // A receiver that refuses the domain: the migration fails after the
    // guest suspended, and the guest resumes here in a new domain.
    let bad = dir.join("refuse.sock");
    let l = std::os::unix::net::UnixListener::bind(&bad).expect("bind");
    let refuser = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"error: refused by the test\n")
            .expect("answer");
        let mut sink = [0u8; 65536];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let o = xenkvm(&run, &["migrate", "--socket", bad.to_str().unwrap(), NAME]);
    assert!(
        !o.status.success(),
        "a refused migration succeeded: {}",
        text(&o)
    );
    assert!(text(&o).contains("refused by the test"), "{}", text(&o));
    drop(refuser);
    let after_refusal = check_continues(&run, after_restore, "after a refused migration");

    // Live migration to another run directory, under load.
    let sock = dir.join("recv.sock");
    let recv = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .arg("--run-dir")
        .arg(&run2)
        .args(["migrate-receive", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("migrate-receive");
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ok(&run, &["migrate", "--socket", sock.to_str().unwrap(), NAME]);
    eprintln!("{out}");
    let downtime: u64 = out
        .split("downtime (suspend to running at the receiver) ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no downtime reported:\n{out}"));
    assert!(
        out.contains("pre-copy round 0: ") && out.contains("final round"),
        "no rounds reported:\n{out}"
    );
    let r = recv.wait_with_output().expect("migrate-receive");
    assert!(r.status.success(), "migrate-receive: {r:?}");
    assert!(domains::row(&run, NAME).is_none(), "the source still runs");
    let after_migrate = check_continues(&run2, after_refusal, "after migration");
    eprintln!("migrated with {downtime} ms downtime; counter {after_migrate}");

    // And on through the ssh-style transport (`migrate DOM HOST` runs
    // `SSH HOST xenkvm migrate-receive`): a stand-in for ssh runs the
    // receiver here, with a third run directory, on its stdin and stdout.
    let run3 = dir.join("run3");
    let _d3 = Domain(run3.clone());
    let ssh = dir.join("ssh.sh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\n# ssh stand-in: HOST xenkvm migrate-receive\nexec {} --run-dir {} migrate-receive\n",
            env!("CARGO_BIN_EXE_xenkvm"),
            run3.display()
        ),
    )
    .expect("write ssh.sh");
    let st = Command::new("chmod").arg("+x").arg(&ssh).status();
    assert!(st.is_ok_and(|s| s.success()));
    let out = ok(
        &run2,
        &["migrate", "--ssh", ssh.to_str().unwrap(), NAME, "elsewhere"],
    );
    assert!(out.contains("migrated domain"), "{out}");
    assert!(domains::row(&run2, NAME).is_none(), "the source still runs");
    let after_ssh = check_continues(&run3, after_migrate, "after migration over ssh");
    eprintln!("{out}counter {after_ssh}");
    ok(&run3, &["destroy", NAME]);
    let _ = std::fs::remove_dir_all(&dir);
}
