//! PV ABI conformance: small freestanding Xen PV test kernels
//! (`tests/guests/conformance/*.c`) built here with the system gcc and run
//! under xenkvm. Each guest prints `CONFORMANCE <test>: PASS|FAIL|XFAIL ...`
//! lines, then `CONFORMANCE-DONE <p> passed, <f> failed, <x> xfail`, and
//! powers off. XFAIL marks a sub-test the guest knows to fail because of a
//! reported monitor bug; every other line must be PASS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime every guest links with.
const RUNTIME: &[&str] = &["head.S", "runtime.c"];

const CFLAGS: &[&str] = &[
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-fno-pic",
    "-fno-pie",
    "-no-pie",
    "-mno-red-zone",
    "-mcmodel=kernel",
    "-mgeneral-regs-only",
    "-O2",
    "-std=gnu11",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    "-Wall",
    "-Wl,--build-id=none",
];

fn sources() -> PathBuf {
    common::workspace().join("tests/guests/conformance")
}

/// gcc, or None (with a message) when the test must be skipped.
/// In CI a missing prerequisite is a failure, never a skip.
fn prerequisites() -> Option<()> {
    if !Path::new("/dev/kvm").exists() {
        assert!(!common::in_ci(), "CI=true but /dev/kvm is absent");
        eprintln!("SKIP: /dev/kvm is absent");
        return None;
    }
    let gcc = Command::new("gcc").arg("--version").output();
    if !gcc.is_ok_and(|o| o.status.success()) {
        assert!(
            !common::in_ci(),
            "CI=true but gcc is missing: the conformance guests are built with the system gcc"
        );
        eprintln!("SKIP: gcc is not installed; the conformance guests need it");
        return None;
    }
    Some(())
}

/// Compile and link guest `name` into the test's temporary directory.
fn build_guest(name: &str) -> PathBuf {
    let src = sources();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance");
    std::fs::create_dir_all(&out_dir).expect("create the guest build directory");
    let elf = out_dir.join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .arg(format!("-fmacro-prefix-map={}/=", src.display()))
        .arg(format!("-Wl,-T,{}", src.join("guest.ld").display()))
        .arg("-o")
        .arg(&elf);
    for f in RUNTIME {
        cmd.arg(src.join(f));
    }
    cmd.arg(src.join(format!("{name}.c")));
    let out = cmd.output().expect("run gcc");
    assert!(
        out.status.success(),
        "building conformance guest {name} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elf
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: usize,
    failed: usize,
    xfail: usize,
}

/// Check a guest's console output; returns the tally or a list of problems.
fn check_output(output: &str) -> Result<Tally, Vec<String>> {
    let mut problems = Vec::new();
    let mut seen = Tally::default();
    let mut done: Option<Tally> = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("CONFORMANCE-DONE ") {
            let nums: Vec<usize> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            match nums[..] {
                [passed, failed, xfail] => {
                    done = Some(Tally {
                        passed,
                        failed,
                        xfail,
                    })
                }
                _ => problems.push(format!("malformed summary: {line}")),
            }
        } else if let Some(rest) = line.strip_prefix("CONFORMANCE ") {
            let verdict = rest.split_once(": ").map(|(_, v)| v).unwrap_or("");
            if verdict.starts_with("PASS") {
                seen.passed += 1;
            } else if verdict.starts_with("XFAIL") {
                seen.xfail += 1;
            } else {
                seen.failed += 1;
                problems.push(line.to_string());
            }
        }
    }
    match done {
        None => problems.push("no CONFORMANCE-DONE line (the guest did not finish)".into()),
        Some(d) => {
            if d.failed != 0 {
                problems.push(format!("the guest reports {} failed sub-tests", d.failed));
            }
            if d != seen {
                problems.push(format!("summary {d:?} does not match the lines {seen:?}"));
            }
        }
    }
    if seen.passed == 0 {
        problems.push("no sub-test passed".into());
    }
    if problems.is_empty() {
        Ok(seen)
    } else {
        Err(problems)
    }
}

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
    let mut problems = match check_output(&r.output) {
        Ok(t) => {
            eprintln!("conformance {name}: {} passed, {} xfail", t.passed, t.xfail);
            Vec::new()
        }
        Err(p) => p,
    };
    if r.timed_out {
        problems.push(format!("timed out after {GUEST_TIMEOUT:?}"));
    }
    if r.status != Some(0) {
        problems.push(format!("xenkvm exit status {:?}, want 0", r.status));
    }
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
