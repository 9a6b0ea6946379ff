//! PV guests on a standard KVM host: xenkvm runs inside an emulated AMD-V
//! host (QEMU TCG `-cpu max`, Linux 6.12 with kvm_amd; resources/nested) and
//! boots the Debian cloud kernel there. Skipped only when the nested host
//! cannot be built here (no qemu-system-x86_64 or no prepared root) and
//! never with CI=true.
//!
//! Every check runs in one boot of the emulated host (each boot of it costs
//! most of a minute), as parts of one job; the test reports every part that
//! failed. `XENKVM_NESTED_PARTS=smoke1,net` runs only those parts
//! (conformance, smoke1, smoke2, net, pvh, pvh2, pvh-reboot,
//! pvh-net).

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
        common::skip("no nested host; run resources/nested/prepare.sh");
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

/// Run `job` in L1 with `files` under /job and raw images attached
/// read-write as /dev/vdb, /dev/vdc, ...; its exit status and output.
fn run_l1(job: &str, files: &[PathBuf], disks: &[PathBuf]) -> (i32, String) {
    let script = common::workspace().join("resources/nested/run-l1.sh");
    let disks: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
    // All the parts take 10-30 min there, depending on how busy the machine is.
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
    (out.status.code().unwrap_or(-1), text.replace('\r', ""))
}

/// The job lines of one part, between markers the checks split on.
fn part(name: &str, lines: &str) -> String {
    format!(
        "echo NESTED-PART-BEGIN {name}; date +%s\n{lines}\necho; echo NESTED-PART-END {name}; date +%s\n"
    )
}

/// What part `name` printed (None if it did not run to its end), and how
/// long it took in L1 (s).
fn part_output<'a>(out: &'a str, name: &str) -> Option<(&'a str, u64)> {
    let body = out.split(&format!("NESTED-PART-BEGIN {name}\n")).nth(1)?;
    let (body, rest) = body.split_once(&format!("NESTED-PART-END {name}\n"))?;
    let t0: u64 = body.lines().next()?.trim().parse().ok()?;
    let t1: u64 = rest.lines().next()?.trim().parse().ok()?;
    Some((body, t1.saturating_sub(t0)))
}

/// Every conformance guest passes: the job lines and the guests' files.
fn conformance_job() -> (String, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut job = String::new();
    for name in conf::GUESTS {
        files.push(conf::build_guest(name));
        job.push_str(&format!(
            "echo NESTED-GUEST-BEGIN {name}\n\
             timeout 120 chroot /root /job/xenkvm run --kernel /job/{name} --memory 64 \
             </dev/null 2>&1\n\
             echo NESTED-GUEST-END {name} rc=$?\n"
        ));
    }
    // A freestanding kernel (linked at 1 MiB, no VIRT_BASE or ENTRY note).
    files.push(conf::build_guest_as(
        "freestanding",
        conf::Layout::Freestanding,
    ));
    job.push_str(
        "echo NESTED-GUEST-BEGIN freestanding\n\
         timeout 120 chroot /root /job/xenkvm run --kernel /job/freestanding-1m --memory 64 \
         --cmdline freestanding-test </dev/null 2>&1\n\
         echo NESTED-GUEST-END freestanding rc=$?\n",
    );
    (job, files)
}

fn check_conformance(out: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for &name in conf::GUESTS.iter().chain(&["freestanding"]) {
        let Some(part) = out
            .split(&format!("NESTED-GUEST-BEGIN {name}\n"))
            .nth(1)
            .and_then(|p| p.split(&format!("NESTED-GUEST-END {name} ")).next())
        else {
            problems.push(format!("conformance {name}: did not run"));
            continue;
        };
        match conf::check_output(part) {
            Ok(t) => eprintln!(
                "nested conformance {name}: {} passed, {} xfail",
                t.passed, t.xfail
            ),
            Err(p) => problems.push(format!("conformance {name}: {}", p.join("; "))),
        }
        if !out.contains(&format!("NESTED-GUEST-END {name} rc=0")) {
            problems.push(format!("conformance {name}: xenkvm exit status not 0"));
        }
        if name == "freestanding" && !part.contains("FREESTANDING hello from a PV kernel") {
            problems.push("freestanding: no greeting".into());
        }
    }
    problems
}

/// The Debian 6.1 cloud kernel boots to a busybox init on `vcpus` vCPUs,
/// forks, fills 64 MiB of tmpfs and powers off with exit 0.
fn smoke_job(vcpus: u32) -> String {
    format!(
        "chroot /root /job/xenkvm -v run --stats --kernel /job/vmlinuz \
         --initrd /job/initramfs-smoke.cpio.gz --memory 192 --vcpus {vcpus} \
         --cmdline 'console=hvc0 quiet xenkvm.mem_mib=64' </dev/null 2>&1\n\
         echo NESTED-RC=$?"
    )
}

fn check_smoke(vcpus: u32, out: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if !out.contains("host profile: hardware") {
        problems.push(format!(
            "smoke {vcpus}: xenkvm did not probe a hardware host in L1"
        ));
    }
    for marker in [
        format!("XENKVM-CPUS {vcpus}"),
        "XENKVM-MEM-OK 64".into(),
        "XENKVM-FORK-OK 100".into(),
        "XENKVM-INIT-DONE".into(),
        "NESTED-RC=0".into(),
    ] {
        if !out.contains(&marker) {
            problems.push(format!("smoke {vcpus}: missing {marker:?}"));
        }
    }
    if let Some(total) = out
        .lines()
        .find(|l| l.starts_with("xenkvm-stats exits_total"))
    {
        eprintln!("nested boot, {vcpus} vCPU(s): {total}");
    }
    problems
}

/// The Debian 6.1 cloud kernel boots as a PVH guest (issue 14) from an
/// xl.cfg with `type = "pvh"`: its PVH entry, KVM's Xen support for its
/// hypercalls, console on hvc0 through our console backend, busybox init,
/// and a clean ACPI power-off.
const PVH_JOB: &str = "cat >/root/tmp/pvh.cfg <<'CFG'
name = \"pvh1\"
type = \"pvh\"
memory = 192
kernel = \"/job/vmlinuz\"
ramdisk = \"/job/initramfs-smoke.cpio.gz\"
cmdline = \"console=hvc0 xenkvm.mem_mib=16\"
CFG
timeout 900 chroot /root /job/xenkvm -v create -F /tmp/pvh.cfg </dev/null 2>&1
echo NESTED-RC=$?";

/// The same kernel as a PVH guest on 2 vCPUs (`xenkvm run`): Linux brings
/// the second up through the local APIC (INIT and start-up IPIs in KVM).
const PVH2_JOB: &str = "timeout 900 chroot /root /job/xenkvm -v run --stats --type pvh --vcpus 2 \
    --kernel /job/vmlinuz --initrd /job/initramfs-smoke.cpio.gz --memory 192 \
    --cmdline 'console=hvc0 xenkvm.mem_mib=16' </dev/null 2>&1
echo NESTED-RC=$?";

/// A PVH guest that reboots at once boots again (a new VM, made under the
/// monitor's system-call filter): the job stops it after its second boot.
const PVH_REBOOT_JOB: &str = "timeout 600 chroot /root /job/xenkvm run --type pvh \
    --kernel /job/vmlinuz --initrd /job/initramfs-reboot.cpio.gz --memory 128 \
    --cmdline 'console=hvc0 quiet' </dev/null >/root/tmp/pvhr.log 2>&1 &
pid=$!
n=0
while [ $n -lt 600 ] && [ \"$(grep -c XENKVM-REBOOTING /root/tmp/pvhr.log)\" -lt 2 ]; do
    sleep 1; n=$((n + 1))
done
kill $pid; wait $pid
cat /root/tmp/pvhr.log
echo \"NESTED-REBOOTS $(grep -c XENKVM-REBOOTING /root/tmp/pvhr.log)\"";

fn check_pvh_reboot(out: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // The job stops it once it has seen two boots (it may see a third).
    let boots: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("NESTED-REBOOTS "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if boots < 2 {
        problems.push(format!(
            "pvh-reboot: the guest booted {boots} time(s), not 2"
        ));
    }
    if !out.contains("xenkvm: guest rebooted; starting it again") {
        problems.push("pvh-reboot: xenkvm did not start the guest again".into());
    }
    problems
}

fn check_pvh2(out: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (marker, what) in [
        (
            "Booting kernel on Xen PVH",
            "the kernel did not boot as PVH",
        ),
        ("XENKVM-CPUS 2", "the guest does not see 2 CPUs"),
        ("XENKVM-INIT-DONE", "busybox init did not finish"),
        ("xenkvm: guest powered off", "no clean power-off"),
        ("NESTED-RC=0", "xenkvm failed"),
    ] {
        if !out.contains(marker) {
            problems.push(format!("pvh2: {what} (no {marker:?})"));
        }
    }
    if let Some(total) = out
        .lines()
        .find(|l| l.starts_with("xenkvm-stats exits_total"))
    {
        eprintln!("nested PVH boot, 2 vCPUs: {total}");
    }
    problems
}

fn check_pvh(out: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (marker, what) in [
        (
            "Booting kernel on Xen PVH",
            "the kernel did not boot as PVH",
        ),
        (
            "Xen HVM callback vector for event delivery is enabled",
            "no callback vector",
        ),
        ("printk: console [hvc0] enabled", "no console on hvc0"),
        (
            "xen:grant_table: Grant tables using version 1 layout",
            "no grant table",
        ),
        (
            "clocksource: Switched to clocksource xen",
            "not on the Xen clock",
        ),
        ("installing Xen timer for CPU 0", "no Xen timer"),
        ("XENKVM-INIT-DONE", "busybox init did not finish"),
        ("reboot: Power down", "the guest did not power off"),
        ("shut down (Poweroff)", "no clean power-off"),
        ("NESTED-RC=0", "xenkvm failed"),
    ] {
        if !out.contains(marker) {
            problems.push(format!("pvh: {what} (no {marker:?})"));
        }
    }
    problems
}

/// pygrub boots the test disk (a raw image that L1 sees as /dev/vdb), the
/// guest writes 1 MiB that the host then reads back from the image, and
/// over netfront/netback on a bridge in a network namespace in L1 it pings
/// L1 and sends that 1 MiB, whose md5 both ends agree on.
fn net_job(n: &Net) -> String {
    let Net {
        ns,
        dev,
        tap,
        sink,
        ty,
        ..
    } = n;
    format!(
        "# L1's chroot is busybox's, which prefers its own applets: absolute paths.
ip() {{ chroot /root /usr/bin/ip \"$@\"; }}
ip netns add {ns}
ip -n {ns} link set lo up
ip -n {ns} link add xkbr0 type bridge
ip -n {ns} addr add 10.99.0.1/24 dev xkbr0
ip -n {ns} link set xkbr0 up
(sleep 1500 | ip netns exec {ns} /job/busybox nc -l -p 5001 >/root/tmp/{sink}) &
timeout 1500 chroot /root /usr/bin/ip netns exec {ns} /job/xenkvm run {ty}--bootloader pygrub --memory 192 \
    --disk file:{dev},xvda,w --net vifname={tap},bridge=xkbr0 \
    --cmdline 'quiet xktest=nested xknet=10.99.0.2/24,10.99.0.1,5001' --on-reboot exit \
    </dev/null 2>&1
echo NESTED-RUN-RC=$?
sync
sleep 2
echo \"NESTED-SINK $(/job/busybox md5sum </root/tmp/{sink}) $(wc -c </root/tmp/{sink})\""
    )
}

/// One pygrub disk and network run: its names in L1 and its disk there.
struct Net {
    name: &'static str,
    ns: &'static str,
    dev: &'static str,
    tap: &'static str,
    sink: &'static str,
    ty: &'static str,
}

/// The PV run (part `net`) and the PVH run (part `pvh-net`, issue 14).
const NETS: [Net; 2] = [
    Net {
        name: "net",
        ns: "xk",
        dev: "/dev/vdb",
        tap: "xkt0",
        sink: "sink",
        ty: "",
    },
    Net {
        name: "pvh-net",
        ns: "xkp",
        dev: "/dev/vdc",
        tap: "xkt1",
        sink: "sinkp",
        ty: "--type pvh ",
    },
];

fn check_net(name: &str, out: &str, image: &Path, s: &disk::Scratch) -> Vec<String> {
    let mut problems = Vec::new();
    for (marker, what) in [
        ("pygrub: booting", "pygrub did not boot"),
        ("XENKVM-WRITE1-DONE ", "the guest did not write"),
        ("NESTED-RUN-RC=0", "xenkvm failed"),
        ("XKNET-PING-OK", "ping failed"),
    ] {
        if !out.contains(marker) {
            problems.push(format!("{name}: {what}"));
        }
    }
    let got = disk::files_in_image(image, &["/data1.bin".into()], s);
    let want = disk::yes("XENKVMDATA0123456789", 1 << 20);
    if got[0].as_deref() != Some(&want[..]) {
        problems.push(format!(
            "{name}: /data1.bin in the image is not what the guest wrote ({:?} bytes)",
            got[0].as_ref().map(Vec::len)
        ));
    }
    let field = |m: &str| {
        out.lines()
            .find_map(|l| l.split_once(m).map(|(_, r)| r.to_string()))
            .unwrap_or_default()
    };
    let guest = field("XKNET-MD5 ");
    let sink = field("NESTED-SINK ");
    let guest_sum = guest.split_whitespace().next().unwrap_or("-");
    if !(sink.split_whitespace().next() == Some(guest_sum) && sink.ends_with(" 1048576")) {
        problems.push(format!(
            "{name}: guest sent md5 {guest:?}, L1 received {sink:?}"
        ));
    }
    problems
}

/// On the standard host, in one boot of it: every conformance guest and a
/// freestanding kernel, the busybox boot on 1 and on 2 vCPUs, and the
/// pygrub disk and network.
#[test]
fn a_standard_kvm_host_runs_pv_guests() {
    let Some(cache) = common::assets() else {
        return;
    };
    let Some(_) = nested(&cache) else {
        return;
    };
    let only = std::env::var("XENKVM_NESTED_PARTS").ok();
    let want = |p: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == p));
    let s = disk::Scratch::new("nested");
    let image = disk::disk_copy(&cache, "disk-root.raw", &s);
    // A second copy for the PVH run (/dev/vdc in L1).
    let image_pvh = disk::disk_copy_as(&cache, "disk-root.raw", "disk-pvh.raw", &s);
    let mut files = vec![
        xenkvm_bin(),
        cache.join("vmlinuz"),
        cache.join("initramfs-smoke.cpio.gz"),
        cache.join("busybox"),
    ];
    let mut job = String::from("cd /job\n");
    let mut parts = Vec::new();
    if want("conformance") {
        let (j, f) = conformance_job();
        files.extend(f);
        job.push_str(&part("conformance", &j));
        parts.push("conformance");
    }
    for (name, vcpus) in [("smoke1", 1), ("smoke2", 2)] {
        if want(name) {
            job.push_str(&part(name, &smoke_job(vcpus)));
            parts.push(name);
        }
    }
    if want("pvh") {
        job.push_str(&part("pvh", PVH_JOB));
        parts.push("pvh");
    }
    if want("pvh2") {
        job.push_str(&part("pvh2", PVH2_JOB));
        parts.push("pvh2");
    }
    if want("pvh-reboot") {
        files.push(cache.join("initramfs-reboot.cpio.gz"));
        job.push_str(&part("pvh-reboot", PVH_REBOOT_JOB));
        parts.push("pvh-reboot");
    }
    for n in &NETS {
        if want(n.name) {
            job.push_str(&part(n.name, &net_job(n)));
            parts.push(n.name);
        }
    }
    let (rc, out) = run_l1(&job, &files, &[image.clone(), image_pvh.clone()]);
    let mut problems = Vec::new();
    for name in parts {
        let Some((o, secs)) = part_output(&out, name) else {
            problems.push(format!("{name}: did not run to its end"));
            continue;
        };
        eprintln!("nested part {name}: {secs} s");
        problems.extend(match name {
            "conformance" => check_conformance(o),
            "smoke1" => check_smoke(1, o),
            "smoke2" => check_smoke(2, o),
            "pvh" => check_pvh(o),
            "pvh2" => check_pvh2(o),
            "pvh-reboot" => check_pvh_reboot(o),
            "pvh-net" => check_net(name, o, &image_pvh, &s),
            _ => check_net(name, o, &image, &s),
        });
    }
    if rc != 0 {
        problems.push(format!("the L1 job exited with {rc}"));
    }
    assert!(
        problems.is_empty(),
        "{}\n--- L1 output ---\n{out}",
        problems.join("\n")
    );
}
