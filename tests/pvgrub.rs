//! PV-GRUB2: Debian's GRUB built as a Xen PV kernel (resources/mkpvgrub.sh) is the
//! domain's `kernel`; with its own console and blkfront drivers it reads the disk's
//! grub.cfg, loads Debian's kernel and initramfs, builds their start_info, page tables
//! and P2M and jumps into them. Linux then connects its own blkfront to the same
//! backend, mounts the disk's root file system and powers off.

mod common;
#[path = "support/disk.rs"]
mod disk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assets, in_ci, Live};
use disk::{disk_copy, Scratch};

/// The cache's PV-GRUB2 and its disk, or None (skip) outside CI when they were not
/// built. In CI their absence is a failure.
fn pvgrub_assets() -> Option<(PathBuf, PathBuf)> {
    let cache = assets()?;
    let grub = cache.join("grub-x86_64-xen.bin");
    let disk = cache.join("disk-pvgrub.raw");
    if !grub.exists() || !disk.exists() {
        assert!(
            !in_ci(),
            "CI=true but {} or {} is missing: run resources/get-assets.sh",
            grub.display(),
            disk.display()
        );
        common::skip(&format!(
            "no PV-GRUB2 in {}; run resources/mkpvgrub.sh",
            cache.display()
        ));
        return None;
    }
    Some((cache, grub))
}

/// Count the lines of `out` that contain `pat`.
fn lines_with(out: &str, pat: &str) -> usize {
    out.lines().filter(|l| l.contains(pat)).count()
}

#[test]
fn pvgrub_chain_loads_debians_kernel_from_the_disk() {
    let Some((cache, grub)) = pvgrub_assets() else {
        return;
    };
    let s = Scratch::new("pvgrub");
    let image = disk_copy(&cache, "disk-pvgrub.raw", &s);
    let kver = std::fs::read_to_string(cache.join("kernel-version")).unwrap();
    let kver = kver.trim();
    // As an xl user writes it: GRUB is the kernel, no bootloader line; two vCPUs.
    let cfg = s.path("pvgrub.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = 'pvgrub'\nmemory = 256\nvcpus = 2\nkernel = '{}'\n\
             disk = ['file:{},xvda,w']\non_reboot = 'destroy'\n",
            grub.display(),
            image.display()
        ),
    )
    .unwrap();
    let run = s.path("run");
    std::fs::create_dir(&run).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xenkvm"));
    cmd.arg("-v")
        .arg("--run-dir")
        .arg(&run)
        .args(["create", "-F"])
        .arg(&cfg);
    let mut g = Live::from_command(cmd);
    let status = g.wait_exit(Duration::from_secs(300));
    let out = g.text();
    check_grub_then_linux(&out, kver, &image);
    assert_eq!(status, Some(0), "did not power off cleanly:\n{out}");
    assert!(out.contains("shut down (Poweroff)"), "{out}");
}

fn check_grub_then_linux(out: &str, kver: &str, image: &Path) {
    // GRUB runs on the PV console and finds the disk through its own blkfront.
    assert!(
        out.contains("Welcome to GRUB!"),
        "GRUB did not start:\n{out}"
    );
    assert!(
        out.contains("xenkvm-pvgrub: reading (xen/xvda,msdos1)/boot/grub/grub.cfg"),
        "GRUB did not find the disk's grub.cfg:\n{out}"
    );
    assert!(
        out.contains(&format!("Loading Linux {kver} ...")),
        "GRUB did not run the default entry:\n{out}"
    );
    assert!(!out.contains("error:"), "GRUB reported an error:\n{out}");
    // GNTTABOP_dump_table (called by GRUB's disk driver) is -ENOSYS as on Xen, unreported.
    assert!(!out.contains("unimplemented grant_table_op"), "{out}");
    // Linux starts where GRUB jumped, on the start_info GRUB built.
    assert!(out.contains("Booting kernel on Xen"), "{out}");
    assert!(
        out.contains("Command line: root=/dev/xvda1 ro console=hvc0 xktest=hello"),
        "the kernel did not get grub.cfg's command line:\n{out}"
    );
    // GRUB ran on vCPU 0 only; Linux brings up the second one itself.
    assert!(out.contains("Brought up 1 node, 2 CPUs"), "{out}");
    // The backend served GRUB's frontend, then Linux's (after GRUB closed its own).
    assert!(
        lines_with(out, "vbd xvda: connected") >= 2,
        "the disk was not connected by GRUB and then by Linux:\n{out}"
    );
    // Linux's initramfs (from the disk, loaded by GRUB) mounted the root file system.
    assert!(out.contains("XENKVM-INITRAMFS-BLK"), "{out}");
    assert!(
        out.contains("XENKVM-ROOT /dev/xvda1 ext4 rw"),
        "root fs not on xvda1 ({}):\n{out}",
        image.display()
    );
    assert!(out.contains("XENKVM-HELLO"), "{out}");
}

/// GRUB reads the PV console: on a disk without grub.cfg (the menu.lst disk) its
/// search finds nothing and it waits at its command line (no menu timeout to race);
/// a command runs, `ls` lists the PV disk, and `halt` powers the domain off through
/// GRUB's own SCHEDOP_shutdown. The disk is the cache's image, read-only.
#[test]
fn pvgrub_console_takes_keys_and_halts() {
    let Some((cache, grub)) = pvgrub_assets() else {
        return;
    };
    let s = Scratch::new("pvgrub-keys");
    let disk = format!("file:{},xvda,r", cache.join("disk-menulst.raw").display());
    let mut g = Live::start(&[
        "--run-dir".into(),
        s.0.display().to_string(),
        "run".into(),
        "--kernel".into(),
        grub.display().to_string(),
        "--disk".into(),
        disk,
    ]);
    let t = Duration::from_secs(120);
    assert!(g.wait_for("grub>", t), "no command line:\n{}", g.text());
    assert!(
        g.text()
            .contains("xenkvm-pvgrub: no /boot/grub/grub.cfg on any disk"),
        "{}",
        g.text()
    );
    g.send("echo XK-$grub_platform-OK\r");
    assert!(g.wait_for("XK-xen-OK", t), "{}", g.text());
    g.send("ls\r");
    assert!(g.wait_for("(xen/xvda)", t), "{}", g.text());
    g.send("halt\r");
    let status = g.wait_exit(t);
    let out = g.text();
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("guest powered off"), "{out}");
    assert!(
        !out.contains("Linux version"),
        "a kernel was booted:\n{out}"
    );
}
