//! Integration tests that boot the stock Debian cloud kernel as a Xen PV guest.

mod common;

use std::time::Duration;

#[test]
fn pv_first_light_prints_boot_banner() {
    let Some(cache) = common::assets() else {
        return;
    };
    let kernel = cache.join("vmlinuz");
    let r = common::xenkvm(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "console=hvc0 earlyprintk=xen",
            "--memory",
            "256",
        ],
        Duration::from_secs(300),
    );
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
