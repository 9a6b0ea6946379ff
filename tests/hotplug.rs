//! Device hotplug with a real guest: `block-attach` of a raw image that the
//! guest reads and writes, `block-detach` (the image is closed, the guest's
//! disk gone), a guest that does not release a disk (paused) and `-f`,
//! `network-attach` of a tap in a bridge that the guest pings through,
//! `network-detach` (the tap gone), refusals of used vdevs, devids and MACs
//! and of a ninth nic, an attached disk still there after a reboot, the
//! monitor's threads and files back to their count, and xenstore clean
//! afterwards. One boot (and a reboot) of `initramfs-hotplug` (xen-blkfront
//! and xen-netfront loaded, no device at boot, a shell on the console), in a
//! network namespace of the test's own.

mod common;
#[path = "support/domains.rs"]
mod domains;
use common::Netns;
use domains::{text, xenkvm, Attached};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "xkhotplug";

/// A verb that must succeed; its stdout.
fn ok(run: &Path, args: &[&str]) -> String {
    let o = xenkvm(run, args);
    assert!(o.status.success(), "{args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A verb that must fail with `msg` in its output.
fn refused(run: &Path, args: &[&str], msg: &str) {
    let o = xenkvm(run, args);
    assert!(!o.status.success(), "{args:?} succeeded: {}", text(&o));
    assert!(text(&o).contains(msg), "{args:?}: {}", text(&o));
}

/// Run `cmd` in the guest's shell on console `con`; the output after the marker it
/// prints once done (`echo` of a unique tag).
fn run_in(con: &mut Attached, cmd: &str, tag: &str) -> String {
    // The tag is split in the command line so that only its echo matches.
    let (a, b) = tag.split_at(3);
    con.send(format!("{cmd}; echo {a}\"\"{b}\n").as_bytes());
    assert!(
        con.wait_for(&format!("{tag}\r\n"), Duration::from_secs(60))
            || con.wait_for(&format!("{tag}\n"), Duration::from_secs(1)),
        "{cmd:?} did not finish:\n{}",
        con.text()
    );
    con.text()
}

/// Destroys the domain when dropped (also when the test fails).
struct Domain(PathBuf);

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = xenkvm(&self.0, &["destroy", NAME]);
    }
}

/// Poll `f` until it holds (or panic with `what`).
fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `block-list` / `network-list` rows (without the header).
fn rows(run: &Path, verb: &str) -> Vec<Vec<String>> {
    ok(run, &[verb, NAME])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// XS_DIRECTORY over the domain's xenstore socket: Some(children), or None
/// when the node does not exist.
fn xs_directory(sock: &Path, path: &str) -> Option<Vec<String>> {
    let mut s = UnixStream::connect(sock).expect("xenstore socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let payload = format!("{path}\0");
    let mut msg = Vec::new();
    for v in [1u32, 7, 0, payload.len() as u32] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(payload.as_bytes());
    s.write_all(&msg).unwrap();
    let mut hdr = [0u8; 16];
    s.read_exact(&mut hdr).unwrap();
    let word = |i: usize| u32::from_le_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
    let mut body = vec![0u8; word(3) as usize];
    s.read_exact(&mut body).unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    match word(0) {
        1 => Some(
            body.split('\0')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        16 if body.starts_with("ENOENT") => None,
        t => panic!("xenstore answered {t}: {body:?}"),
    }
}

fn monitor_has_open(run: &Path, file: &Path) -> bool {
    let pid = std::fs::read_to_string(run.join(format!("domains/{NAME}/pid"))).unwrap();
    std::fs::read_dir(format!("/proc/{}/fd", pid.trim()))
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == file))
}

/// The monitor's threads and open files.
fn monitor_counts(run: &Path) -> (usize, usize) {
    let pid = std::fs::read_to_string(run.join(format!("domains/{NAME}/pid"))).unwrap();
    let n = |d: &str| {
        std::fs::read_dir(format!("/proc/{}/{d}", pid.trim()))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    (n("task"), n("fd"))
}

fn read_at(file: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// The initramfs and a temporary run directory, or None to skip.
fn setup() -> Option<(PathBuf, PathBuf)> {
    let cache = common::assets()?;
    let initrd = cache.join("initramfs-hotplug.cpio.gz");
    if !initrd.exists() {
        assert!(
            !common::in_ci(),
            "CI=true but {} is missing",
            initrd.display()
        );
        common::skip(&format!(
            "{} is missing (run resources/get-assets.sh)",
            initrd.display()
        ));
        return None;
    }
    let dir = std::env::temp_dir().join(format!("xenkvm-hotplug-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Some((cache, dir))
}

#[test]
fn attach_and_detach_disks_and_nics_in_a_running_guest() {
    let Some((cache, dir)) = setup() else { return };
    let run = dir.join("run");
    let disk = dir.join("data.img");
    let mut img = vec![0u8; 8 << 20];
    img[..18].copy_from_slice(b"HOTPLUG-PATTERN-42");
    std::fs::write(&disk, &img).unwrap();
    let other = dir.join("other.img");
    std::fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let cfg = dir.join("g.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{NAME}\"\nmemory = 256\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0\"\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-hotplug.cpio.gz").display()
        ),
    )
    .unwrap();
    // The guest's taps live in the namespace, with a bridge and an address.
    let ns = Netns::new("hotplug");
    for args in [
        &["link", "add", "xkbr0", "type", "bridge"][..],
        &["addr", "add", "10.97.0.1/24", "dev", "xkbr0"],
        &["link", "set", "xkbr0", "up"],
    ] {
        let st = Command::new("ip").args(["-n", &ns.0]).args(args).status();
        assert!(st.is_ok_and(|s| s.success()), "ip {args:?}");
    }
    let o = ns
        .xenkvm()
        .arg("--run-dir")
        .arg(&run)
        .args(["create", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("xenkvm create");
    assert!(o.status.success(), "create: {}", text(&o));
    let domain = Domain(run.clone());
    let id = ok(&run, &["domid", NAME]).trim().to_string();
    let xs = run.join(format!("domains/{NAME}/xenstored.sock"));
    let mut con = Attached::start(&run, NAME);
    assert!(
        con.wait_for("XKHP-READY", Duration::from_secs(300)),
        "{}",
        con.text()
    );
    assert!(!con.text().contains("XKHP-FAIL"), "{}", con.text());

    // block-list: xl's header, no disk yet.
    let l = ok(&run, &["block-list", NAME]);
    assert_eq!(
        l,
        "Vdev  BE  handle state evt-ch ring-ref BE-path                       \n"
    );

    let (threads, fds) = monitor_counts(&run);

    // block-attach: the guest's blkfront connects (state 4) and reads the
    // image; what it writes reaches the file.
    ok(
        &run,
        &[
            "block-attach",
            NAME,
            &format!("file:{},xvdb,w", disk.display()),
        ],
    );
    until("xvdb connected", Duration::from_secs(60), || {
        rows(&run, "block-list")
            .first()
            .is_some_and(|r| r[3] == "4")
    });
    let r = &rows(&run, "block-list")[0];
    assert_eq!(r[..3], ["51728", "0", id.as_str()], "{r:?}");
    assert_eq!(r[6], format!("/local/domain/0/backend/vbd/{id}/51728"));
    assert!(monitor_has_open(&run, &disk));
    let t = run_in(&mut con, "head -c 18 /dev/xvdb; echo", "XKR1-DONE");
    assert!(t.contains("\nHOTPLUG-PATTERN-42"), "{t}");
    run_in(
        &mut con,
        "printf GUEST-WROTE-THIS | dd of=/dev/xvdb bs=512 seek=1 2>/dev/null; sync",
        "XKW1-DONE",
    );
    assert_eq!(read_at(&disk, 512, 16), b"GUEST-WROTE-THIS");

    // Refused: a vdev in use (by name or for another image), a second
    // writer of the same image, a spec that does not parse.
    let spec = format!("{},raw,xvdb,w", other.display());
    refused(&run, &["block-attach", NAME, &spec], "already used");
    let spec = format!("{},raw,xvdc,r", disk.display());
    refused(&run, &["block-attach", NAME, &spec], "shared with a writer");
    refused(
        &run,
        &["block-attach", NAME, "vdev=xvdq,format=vhd,target=/x"],
        "format",
    );
    refused(&run, &["block-detach", NAME, "xvdz"], "not connected");

    // block-detach: the guest lets it go, the image is closed, the guest's
    // disk and both xenstore directories are gone.
    ok(&run, &["block-detach", NAME, "xvdb"]);
    assert!(rows(&run, "block-list").is_empty());
    assert!(!monitor_has_open(&run, &disk), "the image is still open");
    let t = run_in(&mut con, "ls /sys/block/ | grep -c xvd", "XKL1-DONE");
    assert!(t.contains("\n0\r\n") || t.contains("\n0\n"), "{t}");

    // A guest that does not release a disk (paused): block-detach gives up
    // after its timeout and says so; the disk stays; -f removes it.
    ok(
        &run,
        &[
            "block-attach",
            NAME,
            &format!("{},raw,xvdc,r", other.display()),
        ],
    );
    until("xvdc connected", Duration::from_secs(60), || {
        rows(&run, "block-list")
            .first()
            .is_some_and(|r| r[3] == "4")
    });
    ok(&run, &["pause", NAME]);
    refused(
        &run,
        &["block-detach", "-t", "1", NAME, "xvdc"],
        "did not release the device within 1 s",
    );
    assert_eq!(rows(&run, "block-list").len(), 1);
    ok(&run, &["block-detach", "-f", NAME, "51744"]);
    assert!(rows(&run, "block-list").is_empty());
    assert!(!monitor_has_open(&run, &other));
    ok(&run, &["unpause", NAME]);
    let t = run_in(&mut con, "ls /sys/block/ | grep -c xvd", "XKL2-DONE");
    assert!(t.contains("\n0\r\n") || t.contains("\n0\n"), "{t}");

    // network-attach: a tap in the bridge; the guest's eth0 pings the host.
    ok(
        &run,
        &["network-attach", NAME, "bridge=xkbr0", "vifname=xkhp0"],
    );
    assert!(ns.has_link("xkhp0"));
    until("vif 0 connected", Duration::from_secs(60), || {
        rows(&run, "network-list")
            .first()
            .is_some_and(|r| r[4] == "4")
    });
    let r = &rows(&run, "network-list")[0];
    assert_eq!(r[..2], ["0", "0"], "{r:?}");
    let mac = r[2].clone();
    assert!(mac.starts_with("00:16:3e:"), "{r:?}");
    assert_eq!(r[7], format!("/local/domain/0/backend/vif/{id}/0"));
    refused(&run, &["network-attach", NAME, "devid=0"], "already exists");
    refused(
        &run,
        &["network-attach", NAME, &format!("mac={mac}")],
        "already nic 0's",
    );
    let t = run_in(
        &mut con,
        "ip link set eth0 up; ip addr add 10.97.0.2/24 dev eth0; \
         ping -c 2 -w 20 10.97.0.1 >/dev/null && echo PING-OK",
        "XKP1-DONE",
    );
    assert!(t.contains("\nPING-OK"), "{t}");

    // At most 8 nics: the devids go on from the highest (1 to 7).
    for _ in 1..8 {
        ok(&run, &["network-attach", NAME]);
    }
    let devids: Vec<String> = rows(&run, "network-list")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(devids, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    refused(&run, &["network-attach", NAME], "the domain has 8 nics");
    for devid in 1..8 {
        ok(&run, &["network-detach", NAME, &devid.to_string()]);
    }

    // network-detach by MAC: the guest's eth0 and the tap are gone.
    ok(&run, &["network-detach", NAME, &mac]);
    assert!(rows(&run, "network-list").is_empty());
    assert!(!ns.has_link("xkhp0"), "the tap is still there");
    let t = run_in(&mut con, "ls /sys/class/net | grep -c eth", "XKL3-DONE");
    assert!(t.contains("\n0\r\n") || t.contains("\n0\n"), "{t}");

    // Every backend thread and file of the devices is gone (API request
    // threads end just after their answer, hence the wait).
    until(
        "threads and files released",
        Duration::from_secs(10),
        || {
            let (t, f) = monitor_counts(&run);
            t <= threads && f <= fds
        },
    );

    // A device attached lasts for the domain's next boots, as with xl.
    ok(
        &run,
        &[
            "block-attach",
            NAME,
            &format!("{},raw,xvdb,r", disk.display()),
        ],
    );
    con.send(b"reboot -f\n");
    until("the guest booted again", Duration::from_secs(300), || {
        con.text().matches("XKHP-READY").count() >= 2
    });
    until(
        "xvdb connected after the reboot",
        Duration::from_secs(60),
        || {
            rows(&run, "block-list")
                .first()
                .is_some_and(|r| r[0] == "51728" && r[3] == "4")
        },
    );
    let l: serde_json::Value = serde_json::from_str(&ok(&run, &["list", "-l", NAME])).unwrap();
    assert_eq!(l[0]["info"]["boots"], 2, "{l}");
    assert!(rows(&run, "network-list").is_empty());
    let t = run_in(
        &mut con,
        "dd if=/dev/xvdb bs=512 skip=1 count=1 2>/dev/null | head -c 16; echo",
        "XKR2-DONE",
    );
    let after = &t[t.rfind("XKHP-READY").unwrap()..];
    assert!(after.contains("\nGUEST-WROTE-THIS"), "{after}");
    ok(&run, &["block-detach", NAME, "xvdb"]);
    assert!(!monitor_has_open(&run, &disk));

    // Nothing of the devices is left in xenstore.
    let home = format!("/local/domain/{id}");
    let devs = xs_directory(&xs, &format!("{home}/device")).unwrap_or_default();
    assert!(
        !devs.iter().any(|d| d == "vbd" || d == "vif"),
        "{home}/device: {devs:?}"
    );
    for kind in ["vbd", "vif"] {
        assert_eq!(
            xs_directory(&xs, &format!("/local/domain/0/backend/{kind}")),
            None
        );
    }

    drop(con);
    ok(&run, &["destroy", NAME]);
    std::mem::forget(domain);
    let _ = std::fs::remove_dir_all(&dir);
}
