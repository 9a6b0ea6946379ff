//! PVH guests (issue 14). On a host whose KVM lacks Xen support
//! (KVM_CAP_XEN_HVM, as on the development machines) xenkvm refuses them
//! with a message that names the capability, the kernel option and, for a
//! kernel that also boots as PV, `type = "pv"`; tests/nested.rs (part
//! `pvh`) boots one on a host that has it.

mod common;
#[path = "support/domains.rs"]
mod domains;

use std::time::Duration;

use kvm_ioctls::{Cap, Kvm};

/// KVM_CAP_XEN_HVM flags xenkvm needs (HYPERCALL_MSR, INTERCEPT_HCALL,
/// SHARED_INFO, EVTCHN_SEND).
const NEEDED: i32 = 0x1 | 0x2 | 0x4 | 0x20;

fn host_has_kvm_xen() -> bool {
    Kvm::new()
        .map(|k| k.check_extension_int(Cap::XenHvm) & NEEDED == NEEDED)
        .unwrap_or(false)
}

fn assert_refusal(what: &str, out: &str) {
    for want in [
        "KVM_CAP_XEN_HVM",
        "CONFIG_KVM_XEN",
        "Linux >= 5.12",
        "type = \"pv\"",
    ] {
        assert!(out.contains(want), "{what}: {want:?} not said:\n{out}");
    }
}

#[test]
fn pvh_is_refused_without_kvm_xen_support() {
    let Some(cache) = common::assets() else {
        return;
    };
    if host_has_kvm_xen() {
        // Such a host boots the guest instead (as tests/nested.rs part
        // pvh does in its emulated host).
        let args = common::run_args(&cache, Some("smoke"), "192", &["--type", "pvh"]);
        let r = common::xenkvm(&args, Duration::from_secs(600));
        for want in [
            "Booting kernel on Xen PVH",
            "XENKVM-INIT-DONE",
            "xenkvm: guest powered off",
        ] {
            assert!(r.output.contains(want), "{want:?} not seen:\n{}", r.output);
        }
        assert_eq!(r.status, Some(0), "{}", r.output);
        return;
    }
    // xenkvm run --type pvh
    let args = common::run_args(&cache, Some("smoke"), "192", &["--type", "pvh"]);
    let r = common::xenkvm(&args, Duration::from_secs(60));
    assert_eq!(r.status, Some(2), "{}", r.output);
    assert_refusal("run --type pvh", &r.output);
    // An xl.cfg with type = "pvh", through create -F.
    let dir = domains::temp_dir("pvh-refusal");
    let cfg = dir.join("pvh.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"pvh1\"\ntype = \"pvh\"\nmemory = 192\nkernel = \"{}\"\n",
            cache.join("vmlinuz").display()
        ),
    )
    .unwrap();
    let o = domains::xenkvm(&dir, &["create", "-F", cfg.to_str().unwrap()]);
    let text = domains::text(&o);
    assert!(!o.status.success(), "{text}");
    assert_refusal("create -F type = \"pvh\"", &text);
    let _ = std::fs::remove_dir_all(&dir);
}
