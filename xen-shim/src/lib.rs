//! The Xen hypervisor ABI, independent of KVM.
//!
//! Everything here works on a [`mem::GuestMem`] and plain register values so
//! that it can be unit-tested without `/dev/kvm`.

pub mod mem;
pub mod xenstore;
pub mod abi;
pub mod mmu;
pub mod regs;
pub mod guestva;
pub mod cpuid;
pub mod time;
pub mod domain;
pub mod evtchn;
pub mod traps;
pub mod emulate;
pub mod hypercall;
pub mod pvmm;
pub mod descriptors;
pub mod vcpuop;
pub mod vcpuctx;
pub mod evtchn_op;
pub mod vcpu;
pub mod gnttab;
