//! `xenkvm create`: xl.cfg files checked with `-n` and booted in the foreground.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A fresh directory for one test's config files.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xenkvm-xlcfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn xenkvm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .args(args)
        .output()
        .expect("start xenkvm")
}

const PV_CFG: &str = r#"# A typical PV guest, as in /etc/xen/*.cfg
name = "web01"
memory = 768
vcpus = 2
kernel = "/boot/vmlinuz-guest"
ramdisk = "/boot/initrd-guest.img"
extra = "console=hvc0 quiet"
on_reboot = "destroy"
"#;

#[test]
fn dry_run_prints_the_config_as_json() {
    let dir = temp_dir("dry");
    let cfg = dir.join("web01.cfg");
    std::fs::write(&cfg, PV_CFG).unwrap();
    let out = xenkvm(&["create", "-n", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}:\n{stderr}", out.status);
    assert!(stdout.contains(r#""name": "web01""#), "{stdout}");
    assert!(stdout.contains(r#""memory_mib": 768"#), "{stdout}");
    assert!(stdout.contains(r#""on_reboot": "destroy""#), "{stdout}");
    // Overrides come after the file's settings.
    let out = xenkvm(&["create", "-n", cfg.to_str().unwrap(), "memory=1024"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains(r#""memory_mib": 1024"#), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dry_run_reports_a_bad_value_with_file_line_and_key() {
    let dir = temp_dir("typo");
    let cfg = dir.join("typo.cfg");
    let text = PV_CFG.replace("vcpus = 2", "vcpus = \"two\"");
    std::fs::write(&cfg, text).unwrap();
    let out = xenkvm(&["create", "-n", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted vcpus = \"two\":\n{stderr}");
    assert!(stderr.contains("typo.cfg:4"), "no file:line in {stderr}");
    assert!(stderr.contains("vcpus"), "no key in {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pygrub_without_a_disk_is_refused_clearly() {
    let dir = temp_dir("pygrub");
    let cfg = dir.join("grub.cfg");
    std::fs::write(&cfg, "name = \"g\"\nbootloader = \"pygrub\"\n").unwrap();
    let out = xenkvm(&["create", "-F", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pygrub needs a --disk"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn create_boots_the_smoke_guest() {
    let Some(cache) = common::assets() else {
        return;
    };
    let dir = temp_dir("boot");
    let cfg = dir.join("smoke.cfg");
    let text = format!(
        "name = \"smoke\"\nmemory = 512\nvcpus = 1\nkernel = \"{}\"\n\
         ramdisk = \"{}\"\nextra = \"console=hvc0\"\non_reboot = \"destroy\"\n",
        cache.join("vmlinuz").display(),
        cache.join("initramfs-smoke.cpio.gz").display()
    );
    std::fs::write(&cfg, text).unwrap();
    // -F: in this process, console on stdout (without it the domain would
    // run in the background; see tests/xl_verbs.rs).
    let r = common::xenkvm(
        &["create", "-F", cfg.to_str().unwrap()],
        Duration::from_secs(600),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!r.timed_out, "timed out:\n{}", r.output);
    assert!(
        r.output.contains("XENKVM-INIT-DONE"),
        "init did not finish:\n{}",
        r.output
    );
    assert_eq!(r.status, Some(0), "{}", r.output);
}
