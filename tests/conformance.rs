//! PV ABI conformance: small freestanding Xen PV test kernels
//! (`tests/guests/conformance/*.c`) built here with the system gcc and run
//! under xenkvm. Each guest prints `CONFORMANCE <test>: PASS|FAIL|XFAIL ...`
//! lines, then `CONFORMANCE-DONE <p> passed, <f> failed, <x> xfail`, and
//! powers off. XFAIL marks a sub-test the guest knows to fail because of a
//! reported monitor bug; every other line must be PASS.

mod common;
#[path = "support/conformance.rs"]
mod conf;

use conf::{build_guest, check_output, prerequisites, run_problems, Tally};

use std::time::{Duration, Instant};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn run_guest(name: &str) {
    if prerequisites().is_none() {
        return;
    }
    let elf = build_guest(name);
    let start = Instant::now();
    let kernel = elf.to_str().expect("UTF-8 path");
    let r = common::xenkvm(
        &["run", "--kernel", kernel, "--memory", "64"],
        GUEST_TIMEOUT,
    );
    let took = start.elapsed();
    eprintln!(
        "--- conformance guest {name} ({took:.2?}) ---\n{}",
        r.output
    );
    let problems = run_problems(
        &format!("conformance {name}"),
        &r.output,
        r.timed_out,
        r.status,
        GUEST_TIMEOUT,
    );
    assert!(
        problems.is_empty(),
        "conformance guest {name}:\n  {}\n--- output ---\n{}",
        problems.join("\n  "),
        r.output
    );
}

#[test]
fn hypercall_abi() {
    run_guest("abi");
}

#[test]
fn trap_bouncing() {
    run_guest("traps");
}

#[test]
fn iret_kernel_and_user() {
    run_guest("iret");
}

#[test]
fn event_channels() {
    run_guest("evtchn");
}

#[test]
fn timers() {
    run_guest("timer");
}

#[test]
fn grant_table() {
    run_guest("gnttab");
}

#[test]
fn mmu_validation() {
    run_guest("mmu");
}

#[test]
fn output_checker() {
    let ok = "CONFORMANCE a: PASS\nCONFORMANCE b: XFAIL bug\nCONFORMANCE-DONE 1 passed, 0 failed, 1 xfail\n";
    assert_eq!(
        check_output(ok),
        Ok(Tally {
            passed: 1,
            failed: 0,
            xfail: 1
        })
    );
    let failed = "CONFORMANCE a: PASS\nCONFORMANCE b: FAIL x\nCONFORMANCE-DONE 1 passed, 1 failed, 0 xfail\n";
    assert!(check_output(failed).is_err());
    let unfinished = "CONFORMANCE a: PASS\n";
    assert!(check_output(unfinished).is_err());
    let mismatch = "CONFORMANCE a: PASS\nCONFORMANCE-DONE 2 passed, 0 failed, 0 xfail\n";
    assert!(check_output(mismatch).is_err());
}
