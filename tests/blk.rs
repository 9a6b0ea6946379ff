//! PV block devices end to end: the test disks built by resources/mkdisk.sh
//! (busybox root file system on ext4, blkfront in the initramfs), booted
//! directly or through the built-in pygrub; what the guest wrote and synced
//! must be in the image afterwards, also after the monitor was SIGKILLed.

mod common;
#[path = "support/disk.rs"]
mod disk;

use disk::{disk_copy, files_in_image, run, yes, Scratch};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{assets, xenkvm, Live};

fn check_write64(out: &str, raw: &Path, s: &Scratch) {
    assert!(
        out.contains("XENKVM-WRITE-DONE "),
        "guest did not finish writing:\n{out}"
    );
    let got = files_in_image(raw, &["/data.bin".into()], s);
    let want = yes("XENKVMDATA0123456789", 64 << 20);
    let got = got[0].as_ref().expect("/data.bin is not in the image");
    assert_eq!(got.len(), want.len(), "size of /data.bin in the image");
    assert!(
        *got == want,
        "/data.bin in the image differs from what the guest wrote"
    );
}

/// The arguments of `xenkvm run --bootloader pygrub` on `disk` (a spec) with `xktest=TEST`.
fn pygrub_args(disk: &str, test: &str) -> Vec<String> {
    [
        "run",
        "--bootloader",
        "pygrub",
        "--memory",
        "256",
        "--disk",
        disk,
        "--cmdline",
        &format!("xktest={test}"),
        "--on-reboot",
        "exit",
    ]
    .map(String::from)
    .to_vec()
}

/// `xenkvm run --bootloader pygrub` on `disk` (a spec) with `xktest=TEST`; checks
/// that pygrub booted it and that it did not time out.
fn pygrub_run(disk: &str, test: &str) -> common::RunResult {
    let r = xenkvm(&pygrub_args(disk, test), Duration::from_secs(300));
    assert!(!r.timed_out, "timed out:\n{}", r.output);
    assert!(r.output.contains("pygrub: booting"), "{}", r.output);
    r
}

#[test]
fn pygrub_boot_and_64_mib_written_to_a_raw_image() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("raw");
    let disk = disk_copy(&cache, "disk-root.raw", &s);
    let r = pygrub_run(&format!("file:{},xvda,w", disk.display()), "write64");
    let out = &r.output;
    assert!(
        out.contains("XENKVM-ROOT /dev/xvda1 ext4"),
        "root fs not on xvda1:\n{out}"
    );
    assert_eq!(r.status, Some(0), "{out}");
    check_write64(out, &disk, &s);
}

#[test]
fn direct_boot_and_64_mib_written_to_a_qcow2_image() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("qcow2");
    let disk = disk_copy(&cache, "disk-root.qcow2", &s);
    let r = xenkvm(
        &[
            "run",
            "--kernel",
            &cache.join("vmlinuz").display().to_string(),
            "--initrd",
            &cache.join("initramfs-blk.cpio.gz").display().to_string(),
            "--cmdline",
            "console=hvc0 root=/dev/xvda1 xktest=write64",
            "--memory",
            "256",
            "--disk",
            &format!("target={},vdev=xvda,access=rw,format=qcow2", disk.display()),
            "--on-reboot",
            "exit",
        ],
        Duration::from_secs(300),
    );
    let out = &r.output;
    assert!(!r.timed_out, "timed out:\n{out}");
    assert!(
        out.contains("XENKVM-ROOT /dev/xvda1 ext4"),
        "root fs not on xvda1:\n{out}"
    );
    assert_eq!(r.status, Some(0), "{out}");
    let raw = s.path("converted.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&disk)
        .arg(&raw));
    check_write64(out, &raw, &s);
}

#[test]
fn pygrub_boots_a_menu_lst_image() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("menulst");
    let disk = disk_copy(&cache, "disk-menulst.raw", &s);
    let r = pygrub_run(&format!("{},raw,xvda,rw", disk.display()), "hello");
    let out = &r.output;
    assert!(out.contains("XENKVM-HELLO"), "{out}");
    assert_eq!(r.status, Some(0), "{out}");
}

#[test]
fn sigkill_keeps_every_block_acknowledged_after_a_flush() {
    let Some(cache) = assets() else { return };
    let s = Scratch::new("kill");
    let disk = disk_copy(&cache, "disk-root.raw", &s);
    let mut g = Live::start(&pygrub_args(
        &format!("file:{},xvda,w", disk.display()),
        "syncloop",
    ));
    let ok = g.wait_for("XENKVM-SYNCED 6", Duration::from_secs(240));
    // SIGKILL while the guest keeps writing and syncing.
    let _ = g.child.kill();
    let _ = g.child.wait();
    // What the killed run left in the run directory goes at the next look.
    let _ = xenkvm(&["list"], Duration::from_secs(30));
    let out = g.text();
    assert!(ok, "the guest did not sync 6 files:\n{out}");
    let synced: u32 = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("XENKVM-SYNCED "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap();
    let names: Vec<String> = (1..=synced).map(|i| format!("/loop/{i}")).collect();
    let files = files_in_image(&disk, &names, &s);
    for (i, f) in (1..=synced).zip(files) {
        let f = f.unwrap_or_else(|| panic!("/loop/{i} was synced but is not in the image"));
        assert!(
            f == yes(&format!("XENKVM-LOOP-{i}"), 1 << 20),
            "/loop/{i} was synced but its content in the image is wrong"
        );
    }
    eprintln!("all {synced} synced files intact after SIGKILL");
}
