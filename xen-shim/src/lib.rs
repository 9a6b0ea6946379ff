//! The Xen hypervisor ABI, independent of KVM.
//!
//! Everything here works on a [`mem::GuestMem`] and plain register values so
//! that it can be unit-tested without `/dev/kvm`.

pub mod abi;
pub mod conio;
pub mod cpuid;
pub mod descriptors;
pub mod domain;
pub mod emulate;
pub mod evtchn;
pub mod evtchn_op;
pub mod gnttab;
pub mod grantmap;
pub mod guestlog;
pub mod guestva;
pub mod hypercall;
pub mod mem;
pub mod memop;
pub mod mmu;
pub mod pvmm;
pub mod regs;
pub mod stats;
pub mod testing;
pub mod time;
pub mod tlb;
pub mod traps;
pub mod vcpu;
pub mod vcpuctx;
pub mod vcpuctx_save;
pub mod vcpuop;
pub mod xenstore;

#[cfg(test)]
mod tests_overflow;
