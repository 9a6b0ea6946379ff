//! The memory/vCPU matrix (issue 13 item 4): guests of 128 MiB, 1 GiB and
//! 8 GiB and of 1, 4 and 8 vCPUs boot to busybox init, see the memory and
//! CPUs they were given, and power off. Not the cross product: three boots
//! that cover the corners (the smallest guest on one vCPU, the largest on
//! four, eight vCPUs in between). Alone, one after the other on this 2-core
//! PVM-style host: shell after 19 s, 36 s and 46 s (8 GiB: Linux writes its
//! 2 M direct-map entries by one mmu_update hypercall each).

mod common;

use std::time::{Duration, Instant};

/// Boot `memory_mib` MiB and `vcpus` vCPUs; check MemTotal and the CPUs.
fn boot(memory_mib: u64, vcpus: u32) {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = std::env::temp_dir().join(format!(
        "xenkvm-matrix-{memory_mib}-{vcpus}-{}",
        std::process::id()
    ));
    let mem = memory_mib.to_string();
    let n = vcpus.to_string();
    let mut args = common::run_args(
        &cache,
        Some("shell"),
        &mem,
        &["--vcpus", &n, "--cmdline", "console=hvc0 quiet"],
    );
    args.insert(0, run.display().to_string());
    args.insert(0, "--run-dir".into());
    let start = Instant::now();
    let mut g = common::Live::start(&args);
    assert!(
        g.wait_for("XENKVM-SHELL", Duration::from_secs(300)),
        "{memory_mib} MiB, {vcpus} vCPUs: no shell:\n{}",
        g.text()
    );
    let booted = start.elapsed();
    g.send("echo MX=[$(awk '/^MemTotal:/ {print $2}' /proc/meminfo),$(grep -c ^processor /proc/cpuinfo),$(cat /sys/devices/system/cpu/online)]\n");
    // Only the answer (not the echoed command) is digits and commas.
    let answer = |t: &str| -> Option<String> {
        let a = t.rsplit("MX=[").next()?.split(']').next()?;
        let digits = a
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '-');
        (digits && a.contains(',')).then(|| a.to_string())
    };
    let start_q = Instant::now();
    let (text, answer) = loop {
        let t = g.text();
        if let Some(a) = answer(&t) {
            break (t, a);
        }
        assert!(
            start_q.elapsed() < Duration::from_secs(60),
            "no answer:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let parts: Vec<&str> = answer.split(',').collect();
    assert_eq!(parts.len(), 3, "{answer:?}:\n{text}");
    let total_kib: u64 = parts[0].trim().parse().expect("MemTotal");
    let cpus: u32 = parts[1].trim().parse().expect("processors");
    let size_kib = memory_mib << 10;
    // The kernel keeps its image, page structures (1/64) and early
    // allocations out of MemTotal; the rest is the guest's.
    assert!(
        total_kib <= size_kib && total_kib > size_kib - (64 << 10) - size_kib / 32,
        "{memory_mib} MiB guest: MemTotal {total_kib} kB"
    );
    assert_eq!(cpus, vcpus, "{answer:?}");
    let online = if vcpus == 1 {
        "0".to_string()
    } else {
        format!("0-{}", vcpus - 1)
    };
    assert_eq!(parts[2].trim(), online, "{answer:?}");
    g.send("poweroff -f\n");
    assert_eq!(
        g.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{}",
        g.text()
    );
    eprintln!(
        "{memory_mib} MiB, {vcpus} vCPUs: MemTotal {total_kib} kB; shell after {booted:?}, off after {:?}",
        start.elapsed()
    );
    let _ = std::fs::remove_dir_all(&run);
}

/// The three boots run at once (each is mostly one guest's vCPUs waiting
/// on exits; together they take about as long as the slowest alone would
/// on an idle host). Each reports its own failure.
#[test]
fn matrix_boots() {
    if common::assets().is_none() {
        return;
    }
    let runs: Vec<_> = [(128, 1), (1024, 8), (8192, 4)]
        .into_iter()
        .map(|(mib, vcpus)| ((mib, vcpus), std::thread::spawn(move || boot(mib, vcpus))))
        .collect();
    let failed: Vec<_> = runs
        .into_iter()
        .filter_map(|((mib, vcpus), t)| {
            t.join()
                .is_err()
                .then_some(format!("{mib} MiB/{vcpus} vCPUs"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "failed: {failed:?} (their panics are above)"
    );
}
