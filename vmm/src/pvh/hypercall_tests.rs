//! The HVM hypercalls on a test domain: what they answer, what they ask
//! of KVM, and what they refuse.

use xen_shim::abi::{errno::*, hc, DOMID_SELF};
use xen_shim::testing::{map_low_memory, test_domain};
use xen_shim::vcpu::PvVcpu;

use super::boot::{PvhLayout, PAGE};
use super::hypercall::*;

#[derive(Default)]
struct FakeKvm {
    calls: Vec<String>,
}

impl KvmSide for FakeKvm {
    fn set_shared_info(&mut self, gfn: u64) -> Result<(), String> {
        self.calls.push(format!("shinfo {gfn:#x}"));
        Ok(())
    }
    fn set_vcpu_info(&mut self, vcpu: u32, gpa: u64) -> Result<(), String> {
        self.calls.push(format!("vcpu_info {vcpu} {gpa:#x}"));
        Ok(())
    }
    fn set_upcall_vector(&mut self, vector: u8, long_mode: bool) -> Result<(), String> {
        self.calls.push(format!("vector {vector:#x} {long_mode}"));
        Ok(())
    }
    fn set_timer_port(&mut self, vcpu: u32, port: u32) -> Result<(), String> {
        self.calls.push(format!("timer {vcpu} {port}"));
        Ok(())
    }
    fn kick(&mut self, vcpu: u32) {
        self.calls.push(format!("kick {vcpu}"));
    }
    fn map_grant_frame(
        &mut self,
        idx: u32,
        old: Option<u64>,
        gfn: u64,
        _host_gpa: u64,
    ) -> Result<(), String> {
        self.calls.push(format!("grant {idx} {old:?} {gfn:#x}"));
        Ok(())
    }
}

const NR_PAGES: u64 = 64;
const ARG: u64 = 0x8000;

struct T {
    v: PvVcpu,
    st: HvmState,
    kvm: FakeKvm,
}

impl T {
    fn new() -> T {
        let (dom, _) = test_domain(NR_PAGES);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        T {
            v,
            st: HvmState::new(PvhLayout::new(NR_PAGES * PAGE), 1),
            kvm: FakeKvm::default(),
        }
    }

    fn call(&mut self, nr: u64, a0: u64, arg: &[u8]) -> i64 {
        self.v.dom.mem.write(ARG, arg).unwrap();
        let a = [a0, ARG, 0, 0, 0, 0];
        hvm_hypercall(&mut self.v, &mut self.st, &mut self.kvm, nr, a, true).0
    }

    fn param(&mut self, cmd: u64, domid: u16, index: u32, value: u64) -> (i64, u64) {
        let mut b = Vec::new();
        b.extend(domid.to_le_bytes());
        b.extend([0, 0]);
        b.extend(index.to_le_bytes());
        b.extend(value.to_le_bytes());
        let r = self.call(HVM_OP, cmd, &b);
        (r, self.v.dom.mem.read_u64(ARG + 8).unwrap())
    }

    fn physmap(&mut self, space: u32, idx: u64, gfn: u64) -> i64 {
        let mut b = Vec::new();
        b.extend((DOMID_SELF as u16).to_le_bytes());
        b.extend([0, 0]);
        b.extend(space.to_le_bytes());
        b.extend(idx.to_le_bytes());
        b.extend(gfn.to_le_bytes());
        self.call(hc::MEMORY_OP, 7, &b)
    }
}

#[test]
fn params_name_the_rings_and_the_callback_vector_goes_to_kvm() {
    let mut t = T::new();
    let l = PvhLayout::new(NR_PAGES * PAGE);
    let self_id = DOMID_SELF as u16;
    assert_eq!(t.param(1, self_id, 1, 0), (0, l.store_gpa / PAGE));
    assert_eq!(t.param(1, self_id, 2, 0), (0, 1));
    assert_eq!(t.param(1, 1, 17, 0), (0, l.console_gpa / PAGE));
    assert_eq!(t.param(1, self_id, 18, 0), (0, 2));
    assert_eq!(t.param(1, self_id, 99, 0).0, -EINVAL);
    assert_eq!(t.param(1, 5, 1, 0).0, -ESRCH, "another domain");
    // HVM_PARAM_CALLBACK_IRQ: vector type only.
    assert_eq!(t.param(0, self_id, 0, (2 << 56) | 0xf3).0, 0);
    assert_eq!(t.kvm.calls, ["vector 0xf3 true"]);
    assert_eq!(t.param(1, self_id, 0, 0), (0, (2 << 56) | 0xf3));
    assert_eq!(t.param(0, self_id, 0, (2 << 56) | 0x05).0, -EINVAL);
    assert_eq!(t.param(0, self_id, 0, 1).0, -ENOSYS, "GSI 1");
    assert_eq!(t.param(0, self_id, 3, 1).0, -EINVAL, "other params");
    assert_eq!(t.kvm.calls.len(), 1);
}

#[test]
fn shared_info_moves_into_ram_and_grant_frames_outside_it() {
    let mut t = T::new();
    assert_eq!(t.physmap(0, 0, 9), 0);
    assert_eq!(t.v.dom.shared_info_gpa(), 9 * PAGE);
    assert_eq!(t.v.dom.vcpu_info_gpa(0), 9 * PAGE);
    assert_eq!(t.kvm.calls, ["shinfo 0x9", "vcpu_info 0 0x9000"]);
    assert_eq!(t.physmap(0, 1, 9), -EINVAL, "idx of shared_info is 0");
    assert_eq!(t.physmap(0, 0, NR_PAGES), -EINVAL, "outside RAM");
    assert_eq!(t.physmap(0, 0, 0), -EINVAL);
    t.kvm.calls.clear();
    let high = 0x10_0000;
    assert_eq!(t.physmap(1, 0, high), 0);
    assert_eq!(t.physmap(1, 0, high), 0, "again: nothing to do");
    assert_eq!(t.physmap(1, 0, high + 1), 0);
    assert_eq!(t.physmap(1, 1, high + 1), -EINVAL, "two frames at one gfn");
    assert_eq!(t.physmap(1, 32, high + 2), -EINVAL, "beyond the table");
    assert_eq!(t.physmap(1, 1, 3), -EINVAL, "in RAM");
    assert_eq!(t.physmap(1, 1, 1 << 40), -EINVAL, "beyond 40 bits");
    assert_eq!(
        t.physmap(1, 1 << 31, high + 3),
        -EINVAL,
        "status frames (v2)"
    );
    assert_eq!(t.physmap(7, 0, high + 3), -EINVAL, "unknown space");
    assert_eq!(
        t.kvm.calls,
        ["grant 0 None 0x100000", "grant 0 Some(1048576) 0x100001"]
    );
}

#[test]
fn features_are_the_hvm_set_and_32_bit_calls_are_refused() {
    let mut t = T::new();
    assert_eq!(t.call(hc::XEN_VERSION, 6, &[0; 8]), 0);
    assert_eq!(t.v.dom.mem.read_u32(ARG + 4).unwrap(), HVM_FEATURES);
    assert_eq!(HVM_FEATURES & (1 << 8), 1 << 8, "hvm_callback_vector");
    assert_eq!(HVM_FEATURES & (1 << 10), 0, "no hvm_pirqs");
    let a = [6, ARG, 0, 0, 0, 0];
    let r = hvm_hypercall(&mut t.v, &mut t.st, &mut t.kvm, hc::XEN_VERSION, a, false);
    assert_eq!(r.0, -ENOSYS);
    assert_eq!(t.call(hc::MMU_UPDATE, 0, &[0; 8]), -ENOSYS, "PV only");
    assert_eq!(
        t.call(hc::MEMORY_OP, 1, &[0; 48]),
        -ENOSYS,
        "no ballooning yet"
    );
}

#[test]
fn the_timer_port_goes_to_kvm() {
    let mut t = T::new();
    // EVTCHNOP_bind_virq {virq 0 (timer), vcpu 0, OUT port}
    assert_eq!(t.call(hc::EVENT_CHANNEL_OP, 1, &[0; 12]), 0);
    let port = t.v.dom.mem.read_u32(ARG + 8).unwrap();
    assert_ne!(port, 0);
    assert_eq!(t.kvm.calls, [format!("timer 0 {port}")]);
    // VIRQ_CONSOLE (2) is ours.
    let mut b = [0u8; 12];
    b[0] = 2;
    assert_eq!(t.call(hc::EVENT_CHANNEL_OP, 1, &b), 0);
    assert_eq!(t.kvm.calls.len(), 1);
}

#[test]
fn a_send_to_another_vcpus_port_kicks_it_even_masked() {
    let (dom, _) = xen_shim::testing::test_domain_vcpus(NR_PAGES, 2);
    dom.online.store(3, std::sync::atomic::Ordering::SeqCst);
    let mut v = PvVcpu::new(0, dom.clone());
    v.root_kernel = map_low_memory(&dom);
    let mut st = HvmState::new(PvhLayout::new(NR_PAGES * PAGE), 1);
    let mut kvm = FakeKvm::default();
    let port = dom.evtchn.lock().unwrap().bind_ipi(1).unwrap();
    // Masked, as Linux keeps a PV spinlock's port while it polls.
    let mask = dom.shared_info_gpa() + xen_shim::abi::shinfo::EVTCHN_MASK;
    dom.mem.write_u64(mask, u64::MAX).unwrap();
    dom.mem.write(ARG, &port.to_le_bytes()).unwrap();
    let a = [4, ARG, 0, 0, 0, 0];
    let r = hvm_hypercall(&mut v, &mut st, &mut kvm, hc::EVENT_CHANNEL_OP, a, true);
    assert_eq!(r.0, 0);
    assert_eq!(kvm.calls, ["kick 1"]);
    // A port of the caller's own: no kick.
    let own = dom.evtchn.lock().unwrap().bind_ipi(0).unwrap();
    dom.mem.write(ARG, &own.to_le_bytes()).unwrap();
    let r = hvm_hypercall(&mut v, &mut st, &mut kvm, hc::EVENT_CHANNEL_OP, a, true);
    assert_eq!(r.0, 0);
    assert_eq!(kvm.calls.len(), 1);
}

#[test]
fn arguments_at_the_end_of_the_address_space_fault() {
    let mut t = T::new();
    for (nr, a0) in [
        (hc::XEN_VERSION, 6),
        (HVM_OP, 1),
        (HVM_OP, 0),
        (hc::MEMORY_OP, 7),
    ] {
        for arg in [u64::MAX, u64::MAX - 3, u64::MAX - 7, 0xffff_8000_0000_0000] {
            let a = [a0, arg, 0, 0, 0, 0];
            let r = hvm_hypercall(&mut t.v, &mut t.st, &mut t.kvm, nr, a, true);
            assert_eq!(r.0, -EFAULT, "hypercall {nr}/{a0} at {arg:#x}");
        }
    }
    assert!(t.kvm.calls.is_empty());
}
