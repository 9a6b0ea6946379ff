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

/// /dev/kvm and gcc, or None (with a message) when the test must be skipped.
/// In CI a missing prerequisite is a failure, never a skip.
pub fn prerequisites() -> Option<()> {
    if !std::path::Path::new("/dev/kvm").exists() {
        assert!(!crate::common::in_ci(), "CI=true but /dev/kvm is absent");
        crate::common::skip("/dev/kvm is absent");
        return None;
    }
    let gcc = Command::new("gcc").arg("--version").output();
    if !gcc.is_ok_and(|o| o.status.success()) {
        assert!(
            !crate::common::in_ci(),
            "CI=true but gcc is missing: the conformance guests are built with the system gcc"
        );
        crate::common::skip("gcc is not installed; the conformance guests need it");
        return None;
    }
    Some(())
}

pub fn sources() -> PathBuf {
    crate::common::workspace().join("tests/guests/conformance")
}

/// How a guest is linked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `guest.ld`: at 0xffffffff80000000 + phys, with VIRT_BASE, PADDR_OFFSET
    /// and ENTRY notes, hypercalls by SYSCALL.
    Linux,
    /// `freestanding.ld` with `-DFREESTANDING`: at 1 MiB, virtual = physical,
    /// no VIRT_BASE, PADDR_OFFSET or ENTRY note, hypercalls through the
    /// HYPERCALL_PAGE the builder fills.
    Freestanding,
}

/// Compile and link guest `name` into the test's temporary directory.
pub fn build_guest(name: &str) -> PathBuf {
    build_guest_as(name, Layout::Linux)
}

/// Compile and link guest `name` with `layout`.
pub fn build_guest_as(name: &str, layout: Layout) -> PathBuf {
    let src = sources();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance");
    std::fs::create_dir_all(&out_dir).expect("create the guest build directory");
    let (elf, script) = match layout {
        Layout::Linux => (out_dir.join(name), "guest.ld"),
        Layout::Freestanding => (out_dir.join(format!("{name}-1m")), "freestanding.ld"),
    };
    let mut cmd = Command::new("gcc");
    if layout == Layout::Linux {
        cmd.args(CFLAGS);
    } else {
        // A small code model: the image is in the low 2 GiB, not the top.
        cmd.args(CFLAGS.iter().filter(|f| !f.starts_with("-mcmodel=")))
            .args(["-mcmodel=small", "-DFREESTANDING"]);
    }
    cmd.arg(format!("-fmacro-prefix-map={}/=", src.display()))
        .arg(format!("-Wl,-T,{}", src.join(script).display()))
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

/// Everything wrong with one run of a guest: its sub-tests
/// ([`check_output`]; the tally goes to stderr as `{label}: N passed`),
/// a timeout after `timeout`, an exit status other than 0.
pub fn run_problems(
    label: &str,
    output: &str,
    timed_out: bool,
    status: Option<i32>,
    timeout: std::time::Duration,
) -> Vec<String> {
    let mut problems = match check_output(output) {
        Ok(t) => {
            eprintln!("{label}: {} passed, {} xfail", t.passed, t.xfail);
            Vec::new()
        }
        Err(p) => p,
    };
    if timed_out {
        problems.push(format!("timed out after {timeout:?}"));
    }
    if status != Some(0) {
        problems.push(format!("xenkvm exit status {status:?}, want 0"));
    }
    problems
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
