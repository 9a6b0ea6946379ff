//! Integration tests that boot the stock Debian cloud kernel as a Xen PV guest.

mod common;

use std::time::Duration;

#[test]
fn pv_first_light_prints_boot_banner() {
    let Some(cache) = common::assets() else {
        return;
    };
    let args = common::run_args(
        &cache,
        None,
        "256",
        &["--cmdline", "console=hvc0 earlyprintk=xen"],
    );
    let r = common::xenkvm(&args, Duration::from_secs(300));
    for line in [
        "Linux version 6.1.",
        "Hypervisor detected: Xen PV",
        "Booting kernel on Xen",
    ] {
        assert!(
            r.output.contains(line),
            "missing {line:?} in guest output:\n{}",
            r.output
        );
    }
    assert!(
        !r.output.contains("panicked at"),
        "the monitor panicked:\n{}",
        r.output
    );
    assert!(
        !r.timed_out,
        "xenkvm neither finished nor stopped with a message:\n{}",
        r.output
    );
}

fn smoke(vcpus: &str) {
    let Some(cache) = common::assets() else {
        return;
    };
    let args = common::run_args(&cache, Some("smoke"), "512", &["--vcpus", vcpus]);
    let r = common::xenkvm(&args, Duration::from_secs(600));
    let out = &r.output;
    assert!(
        out.contains("XENKVM-INIT-START"),
        "init did not start:\n{out}"
    );
    assert!(
        out.contains(&format!("XENKVM-CPUS {vcpus}")),
        "wrong CPU count:\n{out}"
    );
    // The CPU's brand string, not Linux's "family/model" fallback (19/01).
    let model = out
        .lines()
        .find_map(|l| l.strip_prefix("XENKVM-MODEL"))
        .unwrap_or_else(|| panic!("no model line:\n{out}"))
        .trim();
    assert!(
        model.len() > 5 && !model.contains('/'),
        "model name {model:?}: no brand string"
    );
    let date: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("XENKVM-DATE "))
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or_else(|| panic!("no date line:\n{out}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        date.abs_diff(now) < 600,
        "guest date {date} far from host {now}"
    );
    assert!(
        out.contains("XENKVM-MEM-OK 200"),
        "memory test failed:\n{out}"
    );
    assert!(
        out.contains("XENKVM-FORK-OK 100"),
        "fork test failed:\n{out}"
    );
    assert!(
        out.contains("XENKVM-INIT-DONE"),
        "init did not finish:\n{out}"
    );
    assert_eq!(r.status, Some(0), "xenkvm did not exit 0:\n{out}");
}

#[test]
fn busybox_init_runs_and_powers_off_1_vcpu() {
    smoke("1");
}

#[test]
fn busybox_init_runs_and_powers_off_2_vcpus() {
    smoke("2");
}

#[test]
fn guest_panic_exits_nonzero_with_registers() {
    let Some(cache) = common::assets() else {
        return;
    };
    // No initrd and no root device: the kernel panics mounting root.
    let args = common::run_args(&cache, None, "128", &[]);
    let r = common::xenkvm(&args, Duration::from_secs(300));
    assert_ne!(
        r.status,
        Some(0),
        "a panicking guest must fail:\n{}",
        r.output
    );
    assert!(
        r.output.contains("Kernel panic"),
        "panic text missing:\n{}",
        r.output
    );
    assert!(
        r.output.contains("guest crashed"),
        "no crash report:\n{}",
        r.output
    );
    assert!(
        r.output.contains("rip 0x"),
        "no register dump:\n{}",
        r.output
    );
}

#[test]
fn interactive_shell_echoes() {
    let Some(cache) = common::assets() else {
        return;
    };
    let mut g = common::Live::start(&common::run_args(&cache, Some("shell"), "256", &[]));
    assert!(
        g.wait_for("XENKVM-SHELL", Duration::from_secs(300)),
        "no shell:\n{}",
        g.text()
    );
    std::thread::sleep(Duration::from_secs(2));
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
}

#[test]
fn reboot_restarts_by_default_and_exits_when_asked() {
    let Some(cache) = common::assets() else {
        return;
    };
    let base = common::run_args(&cache, Some("reboot"), "128", &[]);
    let args = common::run_args(&cache, Some("reboot"), "128", &["--on-reboot", "exit"]);
    let r = common::xenkvm(&args, Duration::from_secs(300));
    assert_eq!(r.status, Some(0), "{}", r.output);
    assert!(r.output.contains("guest rebooted; exiting"), "{}", r.output);

    let mut g = common::Live::start(&base);
    assert!(
        g.wait_for("starting it again", Duration::from_secs(300)),
        "no restart:\n{}",
        g.text()
    );
    let second = |t: &str| t.matches("XENKVM-REBOOTING").count() >= 2;
    let start = std::time::Instant::now();
    while !second(&g.text()) && start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        second(&g.text()),
        "the restarted guest did not run init:\n{}",
        g.text()
    );
}
