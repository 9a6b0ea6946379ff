//! PV guests on a standard KVM host: xenkvm runs inside an emulated AMD-V
//! host (QEMU TCG `-cpu max`, Linux 6.12 with kvm_amd; resources/nested) and
//! boots the Debian cloud kernel there. Skipped only when the nested host
//! cannot be built here (no qemu-system-x86_64 or no prepared root) and
//! never with CI=true.

mod common;
#[path = "support/conformance.rs"]
mod conf;
#[path = "support/disk.rs"]
mod disk;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The nested host's cache, or None (with a message) when the test must be skipped.
fn nested(cache: &Path) -> Option<PathBuf> {
    if std::env::var_os("XENKVM_NESTED_ELSEWHERE").is_some() {
        // scripts/test runs this file's binary on its own, beside the rest.
        eprintln!("nested: run by scripts/test in the background");
        return None;
    }
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
    run_l1_with_disks(job, files, &[])
}

/// [`run_l1`] with raw images attached read-write as /dev/vdb, /dev/vdc, ...
fn run_l1_with_disks(job: &str, files: &[PathBuf], disks: &[PathBuf]) -> (i32, String) {
    let script = common::workspace().join("resources/nested/run-l1.sh");
    let disks: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
    // A boot takes 10-30 min there, depending on how busy the machine is.
    let timeout = std::env::var("XENKVM_NESTED_TIMEOUT").unwrap_or_else(|_| "2700".into());
    let out = Command::new("bash")
        .env("XENKVM_NESTED_TIMEOUT", timeout)
        .env("XENKVM_NESTED_DISKS", disks.join(" "))
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

/// The Debian 6.1 cloud kernel boots to a busybox init on `vcpus` vCPUs,
/// forks, fills 64 MiB of tmpfs and powers off with exit 0.
fn smoke_boot(vcpus: u32) {
    let Some(cache) = common::assets() else {
        return;
    };
    let Some(_) = nested(&cache) else {
        return;
    };
    let job = format!(
        "cd /job\n\
         chroot /root /job/xenkvm -v run --stats --kernel /job/vmlinuz \
         --initrd /job/initramfs-smoke.cpio.gz --memory 192 --vcpus {vcpus} \
         --cmdline 'console=hvc0 quiet xenkvm.mem_mib=64' </dev/null 2>&1\n\
         echo NESTED-RC=$?\n"
    );
    let files = [
        xenkvm_bin(),
        cache.join("vmlinuz"),
        cache.join("initramfs-smoke.cpio.gz"),
    ];
    let (rc, out) = run_l1(&job, &files);
    let out = out.replace('\r', "");
    assert!(
        out.contains("host profile: hardware"),
        "xenkvm did not probe a hardware host in L1:\n{out}"
    );
    for marker in [
        format!("XENKVM-CPUS {vcpus}"),
        "XENKVM-MEM-OK 64".into(),
        "XENKVM-FORK-OK 100".into(),
        "XENKVM-INIT-DONE".into(),
        "NESTED-RC=0".into(),
    ] {
        assert!(
            out.contains(&marker),
            "{vcpus} vCPU(s): missing {marker:?}:\n{out}"
        );
    }
    if let Some(total) = out
        .lines()
        .find(|l| l.starts_with("xenkvm-stats exits_total"))
    {
        eprintln!("nested boot, {vcpus} vCPU(s): {total}");
    }
    assert_eq!(rc, 0, "L1 job failed:\n{out}");
}

#[test]
fn pv_guest_boots_on_one_vcpu_of_a_standard_kvm_host() {
    smoke_boot(1);
}

/// About 2 minutes on the emulated host with L1's boot (L1 has one CPU for
/// both vCPUs; an exit costs about 0.3 ms there).
#[test]
fn pv_guest_boots_on_two_vcpus_of_a_standard_kvm_host() {
    smoke_boot(2);
}

/// Every conformance guest passes on the standard host (one L1 boot).
#[test]
fn conformance_guests_pass_on_a_standard_kvm_host() {
    let Some(cache) = common::assets() else {
        return;
    };
    let Some(_) = nested(&cache) else {
        return;
    };
    let mut files = vec![xenkvm_bin()];
    let mut job = String::from("cd /job\n");
    for name in conf::GUESTS {
        files.push(conf::build_guest(name));
        job.push_str(&format!(
            "echo NESTED-GUEST-BEGIN {name}\n\
             timeout 120 chroot /root /job/xenkvm run --kernel /job/{name} --memory 64 \
             </dev/null 2>&1\n\
             echo NESTED-GUEST-END {name} rc=$?\n"
        ));
    }
    let (rc, out) = run_l1(&job, &files);
    // The console lines come through L1's serial port: drop the CRs.
    let out = out.replace('\r', "");
    assert!(
        out.contains("NESTED-GUEST-END"),
        "L1 did not run the guests (rc {rc}):\n{out}"
    );
    let mut problems = Vec::new();
    for name in conf::GUESTS {
        let Some(part) = out
            .split(&format!("NESTED-GUEST-BEGIN {name}\n"))
            .nth(1)
            .and_then(|p| p.split(&format!("NESTED-GUEST-END {name} ")).next())
        else {
            problems.push(format!("{name}: did not run"));
            continue;
        };
        match conf::check_output(part) {
            Ok(t) => eprintln!(
                "nested conformance {name}: {} passed, {} xfail",
                t.passed, t.xfail
            ),
            Err(p) => problems.push(format!("{name}: {}", p.join("; "))),
        }
        if !out.contains(&format!("NESTED-GUEST-END {name} rc=0")) {
            problems.push(format!("{name}: xenkvm exit status not 0"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n--- L1 output ---\n{out}",
        problems.join("\n")
    );
}

/// On the standard host, in one boot: pygrub boots the test disk (a raw
/// image that L1 sees as /dev/vdb), the guest writes 1 MiB that the host
/// then reads back from the image, and over netfront/netback on a bridge in
/// a network namespace in L1 it pings L1 and sends that 1 MiB, whose md5 both
/// ends agree on.
#[test]
fn pygrub_disk_and_network_on_a_standard_kvm_host() {
    let Some(cache) = common::assets() else {
        return;
    };
    let Some(_) = nested(&cache) else {
        return;
    };
    let s = disk::Scratch::new("nested");
    let image = disk::disk_copy(&cache, "disk-root.raw", &s);
    let job = "cd /job
# L1's chroot is busybox's, which prefers its own applets: absolute paths.
ip() { chroot /root /usr/bin/ip \"$@\"; }
ip netns add xk
ip -n xk link set lo up
ip -n xk link add xkbr0 type bridge
ip -n xk addr add 10.99.0.1/24 dev xkbr0
ip -n xk link set xkbr0 up
(sleep 1500 | ip netns exec xk /job/busybox nc -l -p 5001 >/root/tmp/sink) &
timeout 1500 chroot /root /usr/bin/ip netns exec xk /job/xenkvm run --bootloader pygrub --memory 192 \
    --disk file:/dev/vdb,xvda,w --net vifname=xkt0,bridge=xkbr0 \
    --cmdline 'quiet xktest=nested xknet=10.99.0.2/24,10.99.0.1,5001' --on-reboot exit \
    </dev/null 2>&1
echo NESTED-RUN-RC=$?
sync
sleep 2
echo \"NESTED-SINK $(/job/busybox md5sum </root/tmp/sink) $(wc -c </root/tmp/sink)\"
";
    let files = [xenkvm_bin(), cache.join("busybox")];
    let (rc, out) = run_l1_with_disks(job, &files, std::slice::from_ref(&image));
    let out = out.replace('\r', "");
    // pygrub and the write read back on the host
    assert!(
        out.contains("pygrub: booting"),
        "pygrub did not boot:\n{out}"
    );
    assert!(
        out.contains("XENKVM-WRITE1-DONE "),
        "the guest did not write:\n{out}"
    );
    assert!(out.contains("NESTED-RUN-RC=0"), "xenkvm failed:\n{out}");
    let got = disk::files_in_image(&image, &["/data1.bin".into()], &s);
    let want = disk::yes("XENKVMDATA0123456789", 1 << 20);
    assert!(
        got[0].as_deref() == Some(&want[..]),
        "/data1.bin in the image is not what the guest wrote ({:?} bytes)",
        got[0].as_ref().map(Vec::len)
    );
    // the network
    assert!(out.contains("XKNET-PING-OK"), "ping failed:\n{out}");
    let field = |m: &str| {
        out.lines()
            .find_map(|l| l.split_once(m).map(|(_, r)| r.to_string()))
            .unwrap_or_default()
    };
    let guest = field("XKNET-MD5 ");
    let sink = field("NESTED-SINK ");
    let guest_sum = guest.split_whitespace().next().unwrap_or("-");
    assert!(
        sink.split_whitespace().next() == Some(guest_sum) && sink.ends_with(" 1048576"),
        "guest sent md5 {guest:?}, L1 received {sink:?}:\n{out}"
    );
    assert_eq!(rc, 0, "L1 job failed:\n{out}");
}
