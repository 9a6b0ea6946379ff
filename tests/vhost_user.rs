//! PV disks served by a vhost-user-blk backend nobody here wrote: QEMU's
//! `qemu-storage-daemon` exports the test disk (raw or qcow2) on a unix
//! socket and the guest's blkfront reaches it through xenkvm's bridge
//! (`backendtype=vhost-user`). The guest boots from it and writes to it;
//! what it synced is in the image after xenkvm is SIGKILLed; a discard
//! (fstrim) reaches the image. A nic served by DPDK's testpmd (vhost-user
//! port forwarded to a tap in a network namespace) pings and sends 100 MiB.
//! The backends are killed on every path (Drop, and PR_SET_PDEATHSIG
//! should the test process die).

mod common;
#[path = "support/disk.rs"]
mod disk;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, in_ci, skip, Live};
use disk::{disk_copy, files_in_image, run, yes, Scratch};

/// A `qemu-storage-daemon` exporting one image as vhost-user-blk.
struct Qsd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Qsd {
    /// Export `image` (`format` raw or qcow2) on `dir/vhost.sock`; None
    /// (the test skips) when the daemon is not installed outside CI.
    fn start(image: &Path, format: &str, dir: &Path) -> Option<Qsd> {
        Qsd::start_queues(image, format, dir, 1)
    }

    /// The same with `queues` virtqueues.
    fn start_queues(image: &Path, format: &str, dir: &Path, queues: u32) -> Option<Qsd> {
        if Command::new("qemu-storage-daemon")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                !in_ci(),
                "CI=true but qemu-storage-daemon is missing (qemu-utils)"
            );
            skip("qemu-storage-daemon is not installed (qemu-utils)");
            return None;
        }
        let socket = dir.join("vhost.sock");
        let log = dir.join("qsd.log");
        let file = format!(
            "driver=file,node-name=file0,filename={},discard=unmap",
            image.display()
        );
        let fmt = format!("driver={format},node-name=disk0,file=file0,discard=unmap");
        let export = format!(
            "type=vhost-user-blk,id=exp0,node-name=disk0,writable=on,num-queues={queues},\
             addr.type=unix,addr.path={}",
            socket.display()
        );
        let mut cmd = Command::new("qemu-storage-daemon");
        cmd.args(["--blockdev", &file, "--blockdev", &fmt, "--export", &export])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start qemu-storage-daemon");
        let mut q = Qsd { child, socket, log };
        let start = Instant::now();
        while !q.socket.exists() {
            assert!(
                q.child.try_wait().unwrap().is_none(),
                "qemu-storage-daemon exited: {}",
                q.log_text()
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no socket from qemu-storage-daemon"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(q)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM: the daemon flushes and closes the image (qcow2 metadata).
    fn stop(&mut self) {
        if self.alive() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while self.alive() && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn disk_spec(&self) -> String {
        format!(
            "vdev=xvda, backendtype=vhost-user, target={}",
            self.socket.display()
        )
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `xenkvm run` of the test disk's root file system (initramfs-blk mounts
/// /dev/xvda1) with `xktest=TEST` (none: a shell on the console).
fn direct_args(cache: &Path, disk: &str, test: Option<&str>) -> Vec<String> {
    direct_args_vcpus(cache, disk, test, 1)
}

fn direct_args_vcpus(cache: &Path, disk: &str, test: Option<&str>, vcpus: u32) -> Vec<String> {
    let mut cmdline = "console=hvc0 root=/dev/xvda1".to_string();
    if let Some(t) = test {
        cmdline += &format!(" xktest={t}");
    }
    [
        "-v",
        "run",
        "--kernel",
        &cache.join("vmlinuz").display().to_string(),
        "--initrd",
        &cache.join("initramfs-blk.cpio.gz").display().to_string(),
        "--cmdline",
        &cmdline,
        "--memory",
        "256",
        "--vcpus",
        &vcpus.to_string(),
        "--disk",
        disk,
        "--on-reboot",
        "exit",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn sigkill_of_xenkvm_keeps_what_the_guest_synced_to_a_raw_image() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("vhu-kill");
    let image = disk_copy(&cache, "disk-root.raw", &s);
    // Two vCPUs, two queues: blkfront uses both.
    let Some(mut qsd) = Qsd::start_queues(&image, "raw", &s.0, 2) else {
        return;
    };
    let args = direct_args_vcpus(&cache, &qsd.disk_spec(), Some("syncloop"), 2);
    let mut g = Live::start(&args);
    let ok = g.wait_for("XENKVM-SYNCED 4", Duration::from_secs(240));
    let _ = g.child.kill();
    let _ = g.child.wait();
    // What the killed run left in the run directory goes at the next look.
    let _ = common::xenkvm(&["list"], Duration::from_secs(30));
    let out = g.text();
    assert!(ok, "the guest did not sync 4 files:\n{out}");
    assert!(
        out.contains("queue(s))") && out.contains("connected to vhost-user backend"),
        "not served by the bridge:\n{out}"
    );
    assert!(out.contains(", 2 queue(s))"), "not on two queues:\n{out}");
    assert!(
        qsd.alive(),
        "the daemon died with xenkvm:\n{}",
        qsd.log_text()
    );
    qsd.stop();
    let synced: u32 = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("XENKVM-SYNCED "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap();
    let names: Vec<String> = (1..=synced).map(|i| format!("/loop/{i}")).collect();
    for (i, f) in (1..=synced).zip(files_in_image(&image, &names, &s)) {
        let f = f.unwrap_or_else(|| panic!("/loop/{i} was synced but is not in the image"));
        assert!(
            f == yes(&format!("XENKVM-LOOP-{i}"), 1 << 20),
            "/loop/{i} was synced but its content in the image is wrong"
        );
    }
    eprintln!("all {synced} synced files intact after SIGKILL of xenkvm");
}

#[test]
fn xl_cfg_pygrub_boot_from_a_qcow2_image_through_the_daemon_and_64_mib_intact() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("vhu-qcow2");
    let image = disk_copy(&cache, "disk-root.qcow2", &s);
    let Some(mut qsd) = Qsd::start(&image, "qcow2", &s.0) else {
        return;
    };
    // The kernel and initrd come from the disk: pygrub reads them over
    // vhost-user, lets the connection go, and the guest's bridge connects.
    // The disk line is the README's xl.cfg syntax.
    let cfg = s.path("guest.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"vhu-{}\"\nmemory = 256\nbootloader = \"pygrub\"\n\
             extra = \"xktest=write64\"\non_reboot = \"destroy\"\n\
             disk = ['vdev=xvda, backendtype=vhost-user, target={}']\n",
            std::process::id(),
            qsd.socket.display()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let args = ["-v", "create", "-F", &cfg];
    let mut g = Live::start(&args);
    let code = g.wait_exit(Duration::from_secs(300));
    let out = g.text();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pygrub: booting"), "{out}");
    assert!(out.contains("XENKVM-ROOT /dev/xvda1 ext4"), "{out}");
    assert!(out.contains("XENKVM-WRITE-DONE "), "{out}");
    qsd.stop();
    let raw = s.path("converted.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&image)
        .arg(&raw));
    let got = files_in_image(&raw, &["/data.bin".into()], &s);
    let got = got[0].as_ref().expect("/data.bin is not in the image");
    assert!(
        *got == yes("XENKVMDATA0123456789", 64 << 20),
        "/data.bin in the image differs from what the guest wrote"
    );
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn fstrim_in_the_guest_punches_holes_in_the_raw_image() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("vhu-trim");
    let image = disk_copy(&cache, "disk-root.raw", &s);
    let Some(qsd) = Qsd::start(&image, "raw", &s.0) else {
        return;
    };
    let mut g = Live::start(&direct_args(&cache, &qsd.disk_spec(), None));
    assert!(
        g.wait_for("XENKVM-SHELL", Duration::from_secs(120)),
        "no shell:\n{}",
        g.text()
    );
    g.send(
        "cat /sys/block/xvda/queue/discard_max_bytes; \
         head -c 33554432 /dev/urandom > /junk; sync; echo XENKVM-WROTE-$((6*7))\n",
    );
    assert!(
        g.wait_for("XENKVM-WROTE-42", Duration::from_secs(120)),
        "{}",
        g.text()
    );
    let full = allocated(&image);
    g.send("rm /junk; sync; fstrim -v /; echo XENKVM-TRIMMED-$?-$((6*7))\n");
    // The typed line is echoed too: wait for its computed output.
    assert!(
        g.wait_for("XENKVM-TRIMMED-0-42", Duration::from_secs(120)),
        "fstrim failed:\n{}",
        g.text()
    );
    let trimmed = allocated(&image);
    g.send("poweroff -f\n");
    assert_eq!(
        g.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        g.text()
    );
    eprintln!("image allocation: {full} bytes after the write, {trimmed} after fstrim");
    assert!(
        trimmed + (24 << 20) <= full,
        "fstrim gave back less than 24 MiB of the 32 MiB file: {full} -> {trimmed}"
    );
}

/// DPDK's testpmd (Debian's dpdk-dev) in `ns`: a vhost-user-net port on
/// `socket` forwarded to and from a tap `tap` in the namespace (io mode).
/// Its stdin is held open (it exits at the end of input); killed on drop.
struct Testpmd {
    child: Child,
    _stdin: Option<std::process::ChildStdin>,
    log: PathBuf,
}

impl Testpmd {
    fn start(ns: &common::Netns, socket: &Path, tap: &str, dir: &Path) -> Option<Testpmd> {
        if Command::new("dpdk-testpmd").arg("-v").output().is_err() {
            assert!(!in_ci(), "CI=true but dpdk-testpmd is missing (dpdk-dev)");
            skip("dpdk-testpmd is not installed (dpdk-dev)");
            return None;
        }
        let log = dir.join("testpmd.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0, "nice", "-n", "19", "dpdk-testpmd"])
            .args([
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
                "--no-shconf",
                "-l",
                "0-1",
            ])
            .arg(format!("--file-prefix=xkv{}", std::process::id()))
            .arg("--vdev")
            .arg(format!("net_vhost0,iface={},queues=1", socket.display()))
            .arg("--vdev")
            .arg(format!("net_tap0,iface={tap}"))
            .args(["--", "--forward-mode=io", "--auto-start", "--no-mlockall"])
            .arg("--total-num-mbufs=4096")
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start dpdk-testpmd");
        let stdin = child.stdin.take();
        let mut t = Testpmd {
            child,
            _stdin: stdin,
            log,
        };
        let start = Instant::now();
        while !(socket.exists() && ns.has_link(tap)) {
            assert!(
                t.child.try_wait().unwrap().is_none(),
                "dpdk-testpmd exited: {}",
                t.log_text()
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no socket or tap from dpdk-testpmd: {}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(t)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_vif_served_by_dpdk_vhost_user_pings_and_sends_100_mib() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("vhu-net");
    let ns = common::Netns::new("vhunet");
    let socket = s.path("net.sock");
    let Some(pmd) = Testpmd::start(&ns, &socket, "xkdt0", &s.0) else {
        return;
    };
    let ip = |args: &[&str]| {
        let st = Command::new("ip")
            .arg("-n")
            .arg(&ns.0)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "xkdt0"]);
    ip(&["link", "set", "xkdt0", "up"]);
    // The listener: busybox nc in the namespace, its stdin held open.
    let sink = s.path("sink.bin");
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(cache.join("busybox"))
        .args(["nc", "-l", "-p", "5001"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&sink).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the listener");
    let args = common::run_args(
        &cache,
        Some("net"),
        "512",
        &[
            "--cmdline",
            "console=hvc0 xknet=10.99.0.2/24,10.99.0.1,5001 xknet.mib=100",
            "--net",
            &format!("backendtype=vhost-user,target={}", socket.display()),
        ],
    );
    let mut g = Live::start(&args);
    let code = g.wait_exit(Duration::from_secs(600));
    let out = g.text();
    let start = Instant::now();
    while listener.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = listener.kill();
    let _ = listener.wait();
    let report = || format!("xenkvm {code:?}:\n{out}\ntestpmd:\n{}", pmd.log_text());
    assert!(out.contains("XKNET-PING-OK"), "ping failed; {}", report());
    let field = |m: &str| {
        out.lines()
            .find_map(|l| l.split_once(m).map(|(_, r)| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no {m}; {}", report()))
    };
    assert!(field("XKNET-SENT ").contains("rc=0"), "{}", report());
    let got = std::fs::read(&sink).unwrap();
    assert_eq!(got.len(), 100 << 20, "bytes received; {}", report());
    let host_sum = Command::new(cache.join("busybox"))
        .arg("md5sum")
        .arg(&sink)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap();
    let guest_sum = field("XKNET-MD5 ");
    assert_eq!(
        guest_sum.split_whitespace().next(),
        host_sum.split_whitespace().next(),
        "md5 guest vs host; {}",
        report()
    );
    assert_eq!(code, Some(0), "{}", report());
}
