//! Save, restore (and the building blocks of migration) of PV domains in
//! Xen's own stream format (see [`stream`]).
//!
//! Like Xen for PV guests, xenkvm uses the guest's cooperative suspend: the
//! toolstack writes `control/shutdown = suspend`, the guest quiesces its
//! frontends and calls SCHEDOP_shutdown(SHUTDOWN_suspend) with its
//! start_info frame in %rdx; the vCPU thread then keeps the vCPU's state
//! ([`SuspendedVcpu`]) and the domain stops. [`save`] writes the stream;
//! [`restore`] loads one into a freshly built domain, whose suspend
//! hypercall then returns 0 ("resumed in a new domain").

pub mod cli;
pub mod dirty;
pub mod job;
pub mod live;
pub mod restore;
pub mod save;
pub mod scan;
pub mod stream;

use xen_shim::vcpu::BootContext;

/// Xen's SHUTDOWN_suspend.
pub const SHUTDOWN_SUSPEND: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the stream ends early")]
    Truncated,
    #[error("bad stream: {0}")]
    Format(String),
    #[error("the image does not fit this domain: {0}")]
    Mismatch(String),
    #[error("cannot save the domain: {0}")]
    State(String),
    #[error("KVM: {0}")]
    Kvm(String),
    #[error("guest memory: {0}")]
    Memory(String),
}

/// A vCPU's state at its SCHEDOP_shutdown(suspend): its registers as the
/// hypercall returns, its PV context, and its FPU/XSAVE area.
#[derive(Clone)]
pub struct SuspendedVcpu {
    pub id: u32,
    pub ctx: BootContext,
    /// KVM's XSAVE area (4 KiB; its first 512 bytes are the FXSAVE image).
    pub xsave: Vec<u8>,
    /// XCR0.
    pub xcr0: u64,
    /// When the vCPU suspended (the start of a migration's downtime).
    pub at: std::time::Instant,
}
