//! The freestanding PV conformance guests (`tests/guests/conformance`):
//! building them with the system gcc and reading their verdict lines.
//! Shared by tests/conformance.rs (this host) and tests/nested.rs (a
//! standard KVM host).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Every conformance guest, by source name.
pub const GUESTS: &[&str] = &["abi", "traps", "iret", "evtchn", "timer", "gnttab", "mmu"];

/// The runtime every guest links with.
pub const RUNTIME: &[&str] = &["head.S", "runtime.c"];

pub const CFLAGS: &[&str] = &[
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

pub fn sources() -> PathBuf {
    crate::common::workspace().join("tests/guests/conformance")
}

/// Compile and link guest `name` into the test's temporary directory.
pub fn build_guest(name: &str) -> PathBuf {
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
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub xfail: usize,
}

/// Check a guest's console output; returns the tally or a list of problems.
pub fn check_output(output: &str) -> Result<Tally, Vec<String>> {
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
