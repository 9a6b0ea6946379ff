//! The Xen hypervisor ABI, independent of KVM.
//!
//! Everything here works on a [`mem::GuestMem`] and plain register values so
//! that it can be unit-tested without `/dev/kvm`.

pub mod mem;
pub mod xenstore;
