//! Freestanding PV kernels (test kernels, Mini-OS, unikernels): linked at
//! 1 MiB with no VIRT_BASE, PADDR_OFFSET or ENTRY note, a HYPERCALL_PAGE
//! note, LOADER=generic; and the legacy `__xen_guest` string.

use super::notes::*;
use super::testutil::*;
use super::*;

fn with(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut n = freestanding_notes();
    for e in extra {
        n.extend(e.iter().copied());
    }
    build_freestanding(&n, None)
}

fn layout_error(elf: &[u8]) -> String {
    match load_pv_kernel(elf) {
        Err(e @ LoaderError::BadLayout(_)) => e.to_string(),
        other => panic!("want BadLayout, got {other:?}"),
    }
}

#[test]
fn loads_with_libelf_defaults() {
    let k = load_pv_kernel(&build_freestanding(&freestanding_notes(), None)).unwrap();
    assert_eq!(k.notes.virt_base, 0);
    assert_eq!(k.notes.paddr_offset, 0);
    // No ENTRY note: e_entry.
    assert_eq!(k.entry, LOW_TEXT);
    assert_eq!((k.pstart, k.pend), (LOW_TEXT, LOW_TEXT + 0x3000));
    assert_eq!((k.virt_kstart, k.virt_kend), (LOW_TEXT, LOW_TEXT + 0x3000));
    assert_eq!(k.virt_offset(), 0);
    assert_eq!(k.notes.hypercall_page, Some(LOW_TEXT + 0x1000));
    assert_eq!(k.notes.loader, "generic");
    assert_eq!(k.notes.guest_os, "Mini-OS");
    assert!(!k.notes.mod_start_pfn);
    assert_eq!(k.notes.init_p2m, None);
    assert!(k.notes.features.is_empty());
    assert!(!k.notes.legacy_guest_info);
    assert_eq!(k.segments.len(), 2);
    assert_eq!(k.segments[0].paddr, LOW_TEXT);
}

#[test]
fn entry_note_wins_over_e_entry_and_is_bounds_checked() {
    let k = load_pv_kernel(&with(&[xen(
        XEN_ELFNOTE_ENTRY,
        &(LOW_TEXT + 0x40).to_le_bytes(),
    )]))
    .unwrap();
    assert_eq!(k.entry, LOW_TEXT + 0x40);
    // At the very end of the image is still inside (libelf's `entry <= kend`).
    load_pv_kernel(&with(&[xen(
        XEN_ELFNOTE_ENTRY,
        &(LOW_TEXT + 0x3000).to_le_bytes(),
    )]))
    .unwrap();
    let msg = layout_error(&with(&[xen(
        XEN_ELFNOTE_ENTRY,
        &(LOW_TEXT + 0x3001).to_le_bytes(),
    )]));
    assert!(msg.contains("entry 0x103001"), "{msg}");
}

#[test]
fn paddr_offset_without_virt_base_is_refused() {
    let err = load_pv_kernel(&with(&[xen(XEN_ELFNOTE_PADDR_OFFSET, &[0; 8])])).unwrap_err();
    assert!(
        matches!(err, LoaderError::PaddrOffsetWithoutVirtBase),
        "{err}"
    );
}

#[test]
fn virt_base_rules() {
    // VIRT_BASE above the kernel start: libelf refuses.
    let msg = layout_error(&with(&[
        xen(XEN_ELFNOTE_VIRT_BASE, &0x20_0000u64.to_le_bytes()),
        xen(XEN_ELFNOTE_PADDR_OFFSET, &0x20_0000u64.to_le_bytes()),
    ]));
    assert!(
        msg.contains("VIRT_BASE 0x200000 <= kernel start 0x100000"),
        "{msg}"
    );
    // A high VIRT_BASE without PADDR_OFFSET moves the kernel up (offset 0 = notes default).
    let vb = 0xffff_ffff_8000_0000u64;
    let k = load_pv_kernel(&with(&[
        xen(XEN_ELFNOTE_VIRT_BASE, &vb.to_le_bytes()),
        xen(XEN_ELFNOTE_ENTRY, &(vb + LOW_TEXT).to_le_bytes()),
        xen(XEN_ELFNOTE_HYPERCALL_PAGE, &(vb + LOW_TEXT).to_le_bytes()),
    ]))
    .unwrap();
    assert_eq!(k.virt_kstart, vb + LOW_TEXT);
    // Not page-aligned.
    let msg = layout_error(&with(&[
        xen(XEN_ELFNOTE_VIRT_BASE, &0x800u64.to_le_bytes()),
        xen(XEN_ELFNOTE_ENTRY, &(LOW_TEXT + 0x900).to_le_bytes()),
    ]));
    assert!(msg.contains("page-aligned"), "{msg}");
    // Non-canonical, or inside Xen's reserved hole.
    for vb in [
        0x0000_8000_0000_0000u64,
        0x0000_7fff_ffff_f000,
        0xffff_8000_0000_0000,
        0xffff_87ff_fff0_0000,
    ] {
        let msg = layout_error(&with(&[
            xen(XEN_ELFNOTE_VIRT_BASE, &vb.to_le_bytes()),
            xen(XEN_ELFNOTE_ENTRY, &(vb + LOW_TEXT).to_le_bytes()),
            xen(XEN_ELFNOTE_HYPERCALL_PAGE, &(vb + LOW_TEXT).to_le_bytes()),
        ]));
        assert!(msg.contains("not canonical"), "{vb:#x}: {msg}");
    }
}

#[test]
fn hypercall_page_must_be_a_kernel_page() {
    for hp in [LOW_TEXT + 0x1008, LOW_TEXT + 0x3000, 0] {
        let msg = layout_error(&with(&[xen(XEN_ELFNOTE_HYPERCALL_PAGE, &hp.to_le_bytes())]));
        assert!(msg.contains("HYPERCALL_PAGE"), "{msg}");
    }
}

#[test]
fn unsupported_required_feature_is_named() {
    let err = load_pv_kernel(&with(&[xen(
        XEN_ELFNOTE_FEATURES,
        b"!auto_translated_physmap\0",
    )]))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("kernel requires Xen feature auto_translated_physmap,"),
        "{err}"
    );
}

#[test]
fn legacy_xen_guest_section() {
    let s = b"GUEST_OS=Mini-OS,XEN_VER=xen-3.0,LOADER=generic,VIRT_BASE=0x0,HYPERCALL_PAGE=0x101\0";
    let k = load_pv_kernel(&build_freestanding(&[], Some(s))).unwrap();
    assert!(k.notes.legacy_guest_info);
    assert_eq!(k.notes.virt_base, 0);
    assert_eq!(k.notes.paddr_offset, 0);
    assert_eq!(k.notes.hypercall_page, Some(LOW_TEXT + 0x1000));
    assert_eq!(k.entry, LOW_TEXT);
    // Legacy default: PADDR_OFFSET = VIRT_BASE, so p_paddr is a virtual address.
    let s = b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0x100000\0";
    let k = load_pv_kernel(&build_freestanding(&[], Some(s))).unwrap();
    assert_eq!((k.notes.paddr_offset, k.virt_kstart), (0x10_0000, LOW_TEXT));
    let s = b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000\0";
    let msg = layout_error(&build_freestanding(&[], Some(s)));
    assert!(msg.contains("kernel start 0x100000"), "{msg}");
    // Refusals still apply to the legacy string.
    let s = b"GUEST_OS=linux,XEN_VER=xen-2.0\0";
    let err = load_pv_kernel(&build_freestanding(&[], Some(s))).unwrap_err();
    assert!(matches!(err, LoaderError::XenVersion(_)), "{err}");
}

#[test]
fn notes_take_precedence_over_xen_guest() {
    let s = b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000\0";
    let k = load_pv_kernel(&build_freestanding(&freestanding_notes(), Some(s))).unwrap();
    assert!(!k.notes.legacy_guest_info);
    assert_eq!(k.notes.virt_base, 0);
}

#[test]
fn no_notes_and_no_xen_guest_is_not_a_pv_kernel() {
    let err = load_pv_kernel(&build_freestanding(&[], None)).unwrap_err();
    assert!(matches!(err, LoaderError::NoXenNotes), "{err}");
}
