//! PV guests on a standard KVM host: xenkvm runs inside an emulated AMD-V
//! host (QEMU TCG `-cpu max`, Linux 6.12 with kvm_amd; resources/nested) and
//! boots the Debian cloud kernel there. Skipped only when the nested host
//! cannot be built here (no qemu-system-x86_64 or no prepared root) and
//! never with CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The nested host's cache, or None (with a message) when the test must be skipped.
fn nested(cache: &Path) -> Option<PathBuf> {
    let n = cache.join("nested");
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !qemu || !n.join("root.ext4").exists() {
        assert!(
            !common::in_ci(),
            "CI=true but the nested host is not prepared: run resources/nested/prepare.sh"
        );
        eprintln!("SKIP: no nested host; run resources/nested/prepare.sh");
        return None;
    }
    Some(n)
}

/// The xenkvm binary to run inside L1: XENKVM_NESTED_BIN (scripts/test
/// passes the release build: the emulated host is slow) or cargo's.
fn xenkvm_bin() -> PathBuf {
    std::env::var_os("XENKVM_NESTED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_xenkvm")))
}

/// Run `job` in L1 with `files` under /job; its exit status and output.
fn run_l1(job: &str, files: &[PathBuf]) -> (i32, String) {
    let script = common::workspace().join("resources/nested/run-l1.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("-c")
        .arg(job)
        .args(files)
        .output()
        .expect("run resources/nested/run-l1.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The Debian 6.1 cloud kernel boots to a busybox init on 1 and 2 vCPUs,
/// forks, fills 64 MiB of tmpfs and powers off with exit 0.
#[test]
fn pv_guest_boots_on_a_standard_kvm_host() {
    let Some(cache) = common::assets() else {
        return;
    };
    let Some(_) = nested(&cache) else {
        return;
    };
    let mut job = String::from("cd /job\n");
    for vcpus in [1, 2] {
        job.push_str(&format!(
            "chroot /root /job/xenkvm -v run --kernel /job/vmlinuz \
             --initrd /job/initramfs-smoke.cpio.gz --memory 512 --vcpus {vcpus} \
             --cmdline 'console=hvc0 xenkvm.mem_mib=64' </dev/null 2>&1\n\
             echo NESTED-RC-{vcpus}=$?\n"
        ));
    }
    let files = [
        xenkvm_bin(),
        cache.join("vmlinuz"),
        cache.join("initramfs-smoke.cpio.gz"),
    ];
    let (rc, out) = run_l1(&job, &files);
    assert!(
        out.contains("host profile: hardware"),
        "xenkvm did not probe a hardware host in L1:\n{out}"
    );
    for vcpus in [1, 2] {
        let run = out
            .split(&format!("NESTED-RC-{}=", vcpus - 1))
            .last()
            .unwrap_or(&out);
        for marker in [
            format!("XENKVM-CPUS {vcpus}"),
            "XENKVM-MEM-OK 64".into(),
            "XENKVM-FORK-OK 100".into(),
            "XENKVM-INIT-DONE".into(),
            format!("NESTED-RC-{vcpus}=0"),
        ] {
            assert!(
                run.contains(&marker),
                "{vcpus} vCPU(s): missing {marker:?}:\n{out}"
            );
        }
    }
    assert_eq!(rc, 0, "L1 job failed:\n{out}");
}
