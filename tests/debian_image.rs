//! A full Debian 12 image (resources/mkdebian.sh: debootstrap with systemd, udev,
//! ifupdown, openssh-server and the cloud kernel; grub.cfg by update-grub), booted
//! as a user would boot it: an xl.cfg with `bootloader = "pygrub"` and a bridged
//! vif. The guest must reach `login:` on hvc0, accept root's test-only password,
//! have no failed systemd unit, reach the host side of its vif, and power off
//! cleanly. Both the MBR raw image and its qcow2 conversion are booted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Live, Netns};

/// Time allowed from start to `login:`: about 90-120 s on the PVM development host
/// when it is quiet, more than twice that when it is busy (see DEVICE_TIMEOUT_SEC).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(420);
/// systemd waits this long (kernel command line) for a device such as /dev/hvc0,
/// instead of its default 90 s. On a host where every monitor exit costs tens of
/// microseconds (PVM here: about 1.3 million exits to `login:`), udev's coldplug
/// can announce hvc0 more than 90 s after systemd starts when the host is busy;
/// the job then times out, serial-getty@hvc0 is skipped and no `login:` ever
/// comes (issue 13 item 1). Nothing in the guest is wrong: it is only slow.
const DEVICE_TIMEOUT_SEC: u32 = 400;
/// Time allowed for one shell command's marker to appear.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The image in the asset cache, or None (skip) outside CI when it is missing.
fn image(name: &str) -> Option<PathBuf> {
    let cache = common::assets()?;
    let img = cache.join(name);
    if img.exists() {
        return Some(img);
    }
    let msg = format!(
        "{} is missing: build it with `bash resources/mkdebian.sh` (as root, needs \
         debootstrap and Debian's archive; resources/get-assets.sh runs it)",
        img.display()
    );
    assert!(!common::in_ci(), "CI=true but {msg}");
    common::skip(&msg);
    None
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private (sparse) copy of `img`: the guest writes to its disk.
fn private_copy(img: &Path, tag: &str) -> (Scratch, PathBuf) {
    let dir = std::env::temp_dir().join(format!("xenkvm-debian-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let copy = dir.join(img.file_name().expect("image file name"));
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(img)
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp {} failed", img.display());
    (Scratch(dir), copy)
}

/// Send a shell command followed by `echo XKEND-$((n+0))`, whose output `XKEND-<n>`
/// the terminal's echo of the command line does not contain; the command's output.
fn shell(g: &mut Live, cmd: &str, n: u32, timeout: Duration) -> String {
    let before = g.text().len();
    g.send(&format!("{cmd}; echo XKEND-$(({n}+0))\n"));
    let ok = g.wait_for(&format!("XKEND-{n}"), timeout);
    let text = g.text();
    let out = &text[before..];
    let output = match command_output(out, n) {
        Some(o) if ok => o,
        _ => panic!("no XKEND-{n} after `{cmd}`:\n{out}"),
    };
    // Let bash print its next prompt, so that the next command is not typed ahead
    // of it (command_output copes with that too).
    let marker = before + out.find(&format!("XKEND-{n}")).unwrap_or(0);
    let start = Instant::now();
    while start.elapsed() < CMD_TIMEOUT && !g.text()[marker..].contains(":~# ") {
        std::thread::sleep(Duration::from_millis(50));
    }
    output
}

/// The output of command `n` in console text `out` (from where it was typed): from
/// the line after the terminal's last echo of the command up to its `XKEND-<n>`,
/// without carriage returns and bash's bracketed-paste switches; None before the
/// marker. A line typed before bash prints its prompt is echoed twice (once by the
/// tty as it arrives, once by readline after the prompt): the output follows the
/// last echo before the marker.
fn command_output(out: &str, n: u32) -> Option<String> {
    let echo = format!("XKEND-$(({n}+0))");
    let end = out.find(&format!("XKEND-{n}"))?;
    let from = out[..end].rfind(&echo).map(|i| i + echo.len()).unwrap_or(0);
    let start = out[from..end]
        .find('\n')
        .map(|i| from + i + 1)
        .unwrap_or(end);
    Some(
        out[start..end]
            .replace('\r', "")
            .replace("\x1b[?2004l", "")
            .replace("\x1b[?2004h", ""),
    )
}

#[test]
fn command_output_is_what_follows_the_echoed_command() {
    // As seen on hvc0: the previous prompt arrives after `before`, bash switches
    // bracketed paste off and on around the command.
    let empty = "\r\n\x1b[?2004hroot@debian12:~# systemctl --failed; echo XKEND-$((3+0))\r\n\
                 \x1b[?2004lXKEND-3\r\n\x1b[?2004hroot@debian12:~# ";
    assert_eq!(command_output(empty, 3).as_deref(), Some(""));
    let two = "ip -br a; echo XKEND-$((4+0))\r\n\x1b[?2004lenX0 UP 10.98.0.2/24\r\n\
               lo UNKNOWN\r\nXKEND-4\r\n";
    assert_eq!(
        command_output(two, 4).as_deref(),
        Some("enX0 UP 10.98.0.2/24\nlo UNKNOWN\n")
    );
    // Typed ahead of the prompt: the tty's echo, then readline's after the prompt.
    let twice = "systemctl --failed; echo XKEND-$((3+0))\r\n\x1b[?2004hroot@debian12:~# \
                 systemctl --failed; echo XKEND-$((3+0))\r\n\x1b[?2004l\r\nXKEND-3\r\n";
    assert_eq!(command_output(twice, 3).as_deref(), Some("\n"));
    // The echo alone is not the marker.
    assert_eq!(command_output("uname -r; echo XKEND-$((1+0))\r\n", 1), None);
}

fn boot_to_login_and_poweroff(name: &str, format: &str) {
    let Some(img) = image(name) else {
        return;
    };
    let (scratch, disk) = private_copy(&img, format);
    let ns = Netns::new("deb");
    for args in [
        &["link", "add", "xkbr0", "type", "bridge"][..],
        &["link", "set", "xkbr0", "up"],
        &["addr", "add", "10.98.0.1/24", "dev", "xkbr0"],
        &["link", "set", "lo", "up"],
    ] {
        let o = Command::new("ip")
            .args(["-n", &ns.0])
            .args(args)
            .output()
            .expect("run ip");
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    }
    let cfg = scratch.0.join("debian12.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"debian12-{format}\"\nmemory = 512\nvcpus = 2\n\
             bootloader = \"pygrub\"\n\
             disk = ['format={format},vdev=xvda,access=w,target={}']\n\
             vif = ['bridge=xkbr0']\non_reboot = \"destroy\"\n\
             extra = \"systemd.default_timeout_start_sec={DEVICE_TIMEOUT_SEC}\"\n",
            disk.display()
        ),
    )
    .expect("write xl.cfg");
    let mut cmd = ns.xenkvm();
    cmd.args(["create", "-F", cfg.to_str().expect("utf-8 path")]);
    let start = Instant::now();
    let mut g = Live::from_command(cmd);

    let login = g.wait_for("login: ", LOGIN_TIMEOUT);
    let secs = start.elapsed().as_secs_f64();
    assert!(login, "no login prompt in {secs:.0} s:\n{}", g.text());
    eprintln!("DEBIAN-LOGIN {format}: login: after {secs:.1} s");

    g.send("root\n");
    assert!(g.wait_for("Password:", CMD_TIMEOUT), "{}", g.text());
    g.send("xenkvm\n");
    // Typed-ahead input would be flushed by login: wait for the shell's prompt.
    assert!(
        g.wait_for(":~# ", CMD_TIMEOUT),
        "no shell prompt:\n{}",
        g.text()
    );
    let hello = shell(&mut g, "uname -r", 1, CMD_TIMEOUT);
    assert!(hello.contains("cloud-amd64"), "{hello}");

    // Wait for the boot to settle, then no unit may have failed.
    let running = shell(
        &mut g,
        "systemctl is-system-running --wait",
        2,
        LOGIN_TIMEOUT,
    );
    let failed = shell(
        &mut g,
        "systemctl --failed --no-legend --plain --no-pager",
        3,
        CMD_TIMEOUT,
    );
    assert!(
        failed.trim().is_empty(),
        "failed units ({running}):\n{failed}\n{}",
        g.text()
    );
    assert!(running.contains("running"), "state: {running}");

    let net = shell(
        &mut g,
        "ip -br addr show enX0; ping -c 3 -W 5 10.98.0.1",
        4,
        CMD_TIMEOUT,
    );
    assert!(
        // One answer is enough (the first request may wait for ARP).
        net.contains("10.98.0.2/24") && net.contains("bytes from 10.98.0.1"),
        "network:\n{net}"
    );

    g.send("poweroff\n");
    let code = g.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "xenkvm did not exit cleanly:\n{}", g.text());
    eprintln!(
        "DEBIAN-POWEROFF {format}: clean exit after {:.1} s in all",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn debian12_raw_boots_to_login_and_powers_off() {
    boot_to_login_and_poweroff("debian12.raw", "raw");
}

#[test]
fn debian12_qcow2_boots_to_login_and_powers_off() {
    boot_to_login_and_poweroff("debian12.qcow2", "qcow2");
}
