//! The monitor runs under its seccomp filter (docs/sandbox.md): every
//! thread of a running `xenkvm run` is in seccomp filter mode, and the
//! escape hatch turns it off.

mod common;

use std::time::Duration;

/// `Seccomp:` of each thread of process `pid` (from /proc/PID/task/*/status).
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let t = t.unwrap().path();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Seccomp:")));
    }
    out
}

/// Boot the shell guest with `extra` flags, check its threads' modes with
/// `check`, run a command in it and power it off.
fn boot_and_check(extra: &[&str], check: impl Fn(&[(String, String)], &str)) {
    let Some(cache) = common::assets() else {
        return;
    };
    let mut args = vec!["--vcpus", "2"];
    args.extend_from_slice(extra);
    let mut g = common::Live::start(&common::run_args(&cache, Some("shell"), "256", &args));
    assert!(
        g.wait_for("XENKVM-SHELL", Duration::from_secs(300)),
        "no shell:\n{}",
        g.text()
    );
    let modes = seccomp_modes(g.child.id());
    check(&modes, &g.text());
    std::thread::sleep(Duration::from_secs(1));
    g.send("echo hi-$((40+2))\n");
    assert!(
        g.wait_for("hi-42", Duration::from_secs(60)),
        "typed command not run:\n{}",
        g.text()
    );
    g.send("poweroff -f\n");
    assert_eq!(
        g.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{}",
        g.text()
    );
    assert!(!g.text().contains("blocked system call"), "{}", g.text());
}

#[test]
fn every_monitor_thread_runs_under_the_filter() {
    boot_and_check(&[], |modes, text| {
        // main, signals, console input, xenstore, backends, timer, 2 vCPUs.
        assert!(modes.len() >= 5, "{modes:?}");
        assert!(
            modes.iter().all(|(_, m)| m == "2"),
            "a thread outside seccomp filter mode: {modes:?}\n{text}"
        );
    });
    let info = common::xenkvm(&["info"], Duration::from_secs(30));
    assert!(
        info.output
            .lines()
            .any(|l| l.starts_with("seccomp") && l.contains(": on")),
        "{}",
        info.output
    );
}

#[test]
fn no_seccomp_runs_without_the_filter_and_says_so() {
    boot_and_check(&["--no-seccomp"], |modes, text| {
        assert!(modes.iter().all(|(_, m)| m == "0"), "{modes:?}");
        assert!(
            text.contains("WITHOUT its system-call filter"),
            "no warning:\n{text}"
        );
    });
}
