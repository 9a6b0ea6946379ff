//! The legacy `__xen_guest` section: one NUL-terminated string of
//! comma-separated `NAME=VALUE` items (`GUEST_OS=linux,XEN_VER=xen-3.0,
//! VIRT_BASE=0xc0000000,...`), read only when the kernel has no Xen ELF
//! note at all (libelf's `elf_xen_parse_guest_info`).

use super::features::Features;
use super::notes::{PaeMode, RawXenNotes};
use super::LoaderError;

/// C's `strtoull(s, NULL, 0)`: leading blanks, an optional sign, base 16
/// after `0x`, 8 after a leading `0`, else 10; the longest run of digits;
/// saturates on overflow; no digits gives 0.
pub fn strtoull(s: &str) -> u64 {
    let s = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = s.to_ascii_lowercase();
    let hex_digits = lower
        .strip_prefix("0x")
        .filter(|r| r.starts_with(|c: char| c.is_ascii_hexdigit()));
    let (base, digits) = match hex_digits {
        Some(r) => (16, r),
        None if lower.starts_with('0') => (8, lower.as_str()),
        None => (10, lower.as_str()),
    };
    let mut v: u64 = 0;
    for d in digits.chars().map_while(|c| c.to_digit(base)) {
        v = match v
            .checked_mul(u64::from(base))
            .and_then(|x| x.checked_add(u64::from(d)))
        {
            Some(x) => x,
            None => return u64::MAX,
        };
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// Collect the items of a `__xen_guest` string into `raw`. The string ends at
/// its first NUL (or the section's end).
pub fn collect(section: &[u8], raw: &mut RawXenNotes) -> Result<(), LoaderError> {
    let end = section
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(section.len());
    let text = String::from_utf8_lossy(&section[..end]);
    log::debug!("__xen_guest: {text:?}");
    raw.legacy = true;
    let mut hypercall_pfn = None;
    let mut features = Features::default();
    for item in text.split(',').filter(|i| !i.is_empty()) {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        match name {
            "LOADER" => raw.loader = Some(value.to_string()),
            "GUEST_OS" => raw.guest_os = Some(value.to_string()),
            "GUEST_VER" => raw.guest_version = Some(value.to_string()),
            "XEN_VER" => raw.xen_version = Some(value.to_string()),
            "PAE" => {
                raw.pae_mode = if value == "yes[extended-cr3]" {
                    PaeMode::ExtendedCr3
                } else if value.starts_with("yes") {
                    PaeMode::Yes
                } else {
                    raw.pae_mode
                }
            }
            "BSD_SYMTAB" => raw.bsd_symtab = true,
            "VIRT_BASE" => raw.virt_base = Some(strtoull(value)),
            "VIRT_ENTRY" => raw.entry = Some(strtoull(value)),
            "ELF_PADDR_OFFSET" => raw.paddr_offset = Some(strtoull(value)),
            // A page frame number relative to VIRT_BASE here.
            "HYPERCALL_PAGE" => hypercall_pfn = Some(strtoull(value)),
            "FEATURES" => features.add(value)?,
            _ => log::debug!("__xen_guest: ignoring {name:?}"),
        }
    }
    if let Some(pfn) = hypercall_pfn {
        // libelf adds VIRT_BASE only when it is given (else 0 is used later).
        let va = pfn << 12;
        raw.hypercall_page = Some(raw.virt_base.map_or(va, |vb| va.wrapping_add(vb)));
    }
    raw.features = Some(features);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_as_c() {
        assert_eq!(strtoull("0xC0000000"), 0xc000_0000);
        assert_eq!(strtoull("  42,"), 42);
        assert_eq!(strtoull("010"), 8);
        assert_eq!(strtoull("0"), 0);
        assert_eq!(strtoull("09"), 0);
        assert_eq!(strtoull("0x"), 0);
        assert_eq!(strtoull("0xg"), 0);
        assert_eq!(strtoull(""), 0);
        assert_eq!(strtoull("junk"), 0);
        assert_eq!(strtoull("12abc"), 12);
        assert_eq!(strtoull("+7"), 7);
        assert_eq!(strtoull("-1"), u64::MAX);
        assert_eq!(strtoull("0xffffffffffffffffff"), u64::MAX);
        assert_eq!(strtoull("99999999999999999999999"), u64::MAX);
    }

    #[test]
    fn legacy_linux_string() {
        let s = b"GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,\
                  ELF_PADDR_OFFSET=0xffffffff80000000,HYPERCALL_PAGE=0x101,LOADER=generic,\
                  FEATURES=!writable_page_tables|pae_pgdir_above_4gb,PAE=yes[extended-cr3],\
                  BSD_SYMTAB\0GUEST_OS=ignored";
        let mut raw = RawXenNotes::default();
        collect(s, &mut raw).unwrap();
        assert!(raw.legacy);
        assert_eq!(raw.guest_os.as_deref(), Some("linux"));
        assert_eq!(raw.guest_version.as_deref(), Some("2.6"));
        assert_eq!(raw.xen_version.as_deref(), Some("xen-3.0"));
        assert_eq!(raw.loader.as_deref(), Some("generic"));
        assert_eq!(raw.virt_base, Some(0xffff_ffff_8000_0000));
        assert_eq!(raw.paddr_offset, Some(0xffff_ffff_8000_0000));
        assert_eq!(raw.hypercall_page, Some(0xffff_ffff_8010_1000));
        assert_eq!(raw.pae_mode, PaeMode::ExtendedCr3);
        assert!(raw.bsd_symtab);
        let f = raw.features.unwrap();
        assert_eq!(f.required, ["writable_page_tables"]);
        assert_eq!(raw.entry, None);
    }

    #[test]
    fn legacy_odd_items() {
        let mut raw = RawXenNotes::default();
        collect(
            b"PAE=yes,,VIRT_ENTRY=0x100000,HYPERCALL_PAGE=2,NAME",
            &mut raw,
        )
        .unwrap();
        assert_eq!(raw.pae_mode, PaeMode::Yes);
        assert_eq!(raw.entry, Some(0x10_0000));
        // No VIRT_BASE: the page number is taken as is.
        assert_eq!(raw.hypercall_page, Some(0x2000));
        assert!(collect(b"FEATURES=!dom0", &mut RawXenNotes::default()).is_err());
        // Not UTF-8, no NUL: still parsed, nothing panics.
        collect(&[0xff, b',', b'=', 0xfe], &mut RawXenNotes::default()).unwrap();
    }
}
