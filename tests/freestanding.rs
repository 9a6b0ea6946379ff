//! A freestanding PV kernel, as Mini-OS and unikernels are built: linked at
//! 1 MiB with virtual = physical addresses and no VIRT_BASE, PADDR_OFFSET or
//! ENTRY note, making every hypercall through the page its HYPERCALL_PAGE
//! note names (`tests/guests/conformance/freestanding.c`, built with
//! `freestanding.ld` and `-DFREESTANDING`). xenkvm must apply Xen's
//! defaults (VIRT_BASE 0, PADDR_OFFSET 0, entry = e_entry), fill the page,
//! and the guest prints over console_io and powers off.

mod common;
#[path = "support/conformance.rs"]
mod conf;

use conf::{build_guest_as, prerequisites, run_problems, Layout};

use std::time::Duration;

const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The Xen note types (`elfnote.h`) this kernel must or must not carry.
const ENTRY: u32 = 1;
const HYPERCALL_PAGE: u32 = 2;
const VIRT_BASE: u32 = 3;
const PADDR_OFFSET: u32 = 4;

/// The built image really is what the test claims: loaded at 1 MiB with
/// p_vaddr = p_paddr, e_entry there, and the Xen notes it has and lacks.
fn check_image(bytes: &[u8]) {
    let elf = goblin::elf::Elf::parse(bytes).expect("parse the guest ELF");
    assert_eq!(elf.entry, 0x10_0000, "e_entry");
    let loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .collect();
    assert_eq!(loads[0].p_vaddr, 0x10_0000);
    for p in &loads {
        assert_eq!(p.p_vaddr, p.p_paddr, "virtual = physical");
    }
    let types: Vec<u32> = elf
        .iter_note_headers(bytes)
        .expect("PT_NOTE")
        .filter_map(Result::ok)
        .filter(|n| n.name == "Xen")
        .map(|n| n.n_type)
        .collect();
    assert!(types.contains(&HYPERCALL_PAGE), "notes {types:?}");
    for absent in [ENTRY, VIRT_BASE, PADDR_OFFSET] {
        assert!(!types.contains(&absent), "note {absent} present: {types:?}");
    }
}

#[test]
fn freestanding_kernel_at_1_mib_boots() {
    if prerequisites().is_none() {
        return;
    }
    let elf = build_guest_as("freestanding", Layout::Freestanding);
    check_image(&std::fs::read(&elf).expect("read the guest"));
    let kernel = elf.to_str().expect("UTF-8 path");
    let r = common::xenkvm(
        &[
            "-v",
            "run",
            "--kernel",
            kernel,
            "--memory",
            "64",
            "--cmdline",
            "freestanding-test",
        ],
        GUEST_TIMEOUT,
    );
    eprintln!("--- freestanding guest ---\n{}", r.output);
    let mut problems = run_problems(
        "freestanding",
        &r.output,
        r.timed_out,
        r.status,
        GUEST_TIMEOUT,
    );
    for want in [
        "FREESTANDING hello from a PV kernel at 0x100000",
        // The loader took Xen's defaults (logged at -v).
        "kernel has no VIRT_BASE: using 0",
        "kernel has no PADDR_OFFSET: using 0x0",
        "kernel has no ENTRY: using e_entry 0x100000",
    ] {
        if !r.output.contains(want) {
            problems.push(format!("no {want:?} in the output"));
        }
    }
    assert!(
        problems.is_empty(),
        "freestanding guest:\n  {}\n--- output ---\n{}",
        problems.join("\n  "),
        r.output
    );
}

/// The conformance guests whose sub-tests hold in any layout, built the
/// freestanding way: traps, events, grant tables and user mode work for a
/// kernel in the low half with hypercalls through the page. (`abi` and
/// `timer` are left out: they use 0x1000 and 0x10 as unmapped addresses,
/// which a kernel with VIRT_BASE 0 maps, as under Xen; `mmu` aliases the
/// kernel through L4 slot 511, where the Linux layout has it.)
#[test]
fn conformance_guests_in_the_freestanding_layout() {
    if prerequisites().is_none() {
        return;
    }
    let mut problems = Vec::new();
    for name in ["traps", "evtchn", "gnttab", "iret"] {
        let elf = build_guest_as(name, Layout::Freestanding);
        let kernel = elf.to_str().expect("UTF-8 path");
        let r = common::xenkvm(
            &["run", "--kernel", kernel, "--memory", "64"],
            GUEST_TIMEOUT,
        );
        eprintln!("--- {name} (freestanding layout) ---\n{}", r.output);
        let label = format!("{name} (freestanding layout)");
        let p = run_problems(&label, &r.output, r.timed_out, r.status, GUEST_TIMEOUT);
        problems.extend(p.into_iter().map(|p| format!("{name}: {p}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
