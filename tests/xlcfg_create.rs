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
    // (memory: 32 MiB, the default, is refused before pygrub is looked at.)
    std::fs::write(
        &cfg,
        "name = \"g\"\nmemory = 256\nbootloader = \"pygrub\"\n",
    )
    .unwrap();
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

/// The host's memory in MiB, as the monitor reads it.
fn host_mib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = m
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib >> 10
}

/// `create -n CFG [OVERRIDES]`: (success, stdout, stderr).
fn dry_run(cfg: &std::path::Path, overrides: &[&str]) -> (bool, String, String) {
    let mut args = vec!["create", "-n", cfg.to_str().unwrap()];
    args.extend_from_slice(overrides);
    let out = xenkvm(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 17: memory sizes take units and are checked against the host;
/// vcpus above the monitor's limit name the limit; every error has
/// file:line:key.
#[test]
fn memory_and_vcpus_are_checked_against_host_and_monitor() {
    let dir = temp_dir("limits");
    let cfg = dir.join("web02.cfg");
    let base = "name = \"web02\"\nkernel = \"/boot/vmlinuz\"\n";
    let host = host_mib();
    let cases: &[(String, &str)] = &[
        (format!("memory = {}", host + 1), "web02.cfg:3: memory: "),
        ("memory = 0".into(), "web02.cfg:3: memory: 0 MiB"),
        (
            "memory = 1".into(),
            "web02.cfg:3: memory: 1 MiB is too little",
        ),
        (
            "memory = 512\nvcpus = 64".into(),
            "web02.cfg:4: vcpus: 64 vCPUs: xenkvm runs at most 15 vCPUs",
        ),
        (
            "memory = 512\nmaxmem = 100000G".into(),
            "web02.cfg:4: maxmem: ",
        ),
    ];
    for (extra, want) in cases {
        std::fs::write(&cfg, format!("{base}{extra}\n")).unwrap();
        let (ok, _, stderr) = dry_run(&cfg, &[]);
        assert!(!ok, "{extra} accepted:\n{stderr}");
        assert!(stderr.contains(want), "{extra}: want {want:?} in\n{stderr}");
        assert!(!stderr.contains("--vcpus"), "{stderr}");
    }
    std::fs::write(&cfg, format!("{base}memory = {}\n", host + 1)).unwrap();
    let (_, _, stderr) = dry_run(&cfg, &[]);
    assert!(
        stderr.contains(&format!("more than this host's memory ({host} MiB)")),
        "{stderr}"
    );
    // Units as QEMU users type them, in the file and on the command line.
    std::fs::write(&cfg, format!("{base}memory = 1G\nvcpus = 2\n")).unwrap();
    let (ok, stdout, stderr) = dry_run(&cfg, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(r#""memory_mib": 1024"#), "{stdout}");
    let (ok, stdout, stderr) = dry_run(&cfg, &["memory=512M"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(r#""memory_mib": 512"#), "{stdout}");
    let (ok, _, stderr) = dry_run(&cfg, &["memory=1000000G"]);
    assert!(!ok);
    assert!(stderr.contains("command line:1: memory: "), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 17: `create -n` is the real parse: it refuses what create
/// refuses and shows the disk image create would use.
#[test]
fn dry_run_refuses_and_resolves_as_create_does() {
    let dir = temp_dir("same");
    let cfg = dir.join("web02.cfg");
    let base = "name = \"web02\"\nmemory = 256\nkernel = \"/boot/vmlinuz\"\n";
    std::fs::write(&cfg, format!("{base}type = \"hvm\"\n")).unwrap();
    let (ok, _, stderr) = dry_run(&cfg, &[]);
    assert!(!ok, "hvm accepted by -n:\n{stderr}");
    assert!(stderr.contains("type = \"hvm\""), "{stderr}");
    // The same refusal from create itself.
    let out = xenkvm(&["create", "-F", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("type = \"hvm\""));
    // A relative image next to the config: shown as create uses it.
    std::fs::write(dir.join("web02.img"), b"").unwrap();
    std::fs::write(
        &cfg,
        format!("{base}disk = ['file:web02.img,xvda,w', 'phy:sdz9,xvdb,r']\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = dry_run(&cfg, &[]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let img = std::fs::canonicalize(&dir).unwrap().join("web02.img");
    assert_eq!(
        v["disks"][0]["target"],
        img.display().to_string(),
        "{stdout}"
    );
    assert_eq!(v["disks"][1]["target"], "/dev/sdz9", "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
