//! A vCPU's registers as the exit path sees them: through the `kvm_run`
//! sync-regs area where the host offers it (`KVM_CAP_SYNC_REGS`), so that an
//! exit costs one ioctl (KVM_RUN) instead of one per register set.
//!
//! With sync regs on, KVM copies the general and special registers and the
//! pending events into `kvm_run` at every exit; writes are kept here and
//! handed to KVM through `kvm_run` with a dirty bit just before the next
//! KVM_RUN, which loads them on entry. KVM clears a dirty bit once it has
//! loaded that set; a KVM_RUN that returns before loading it (an immediate
//! exit) overwrites the area with the old values, so a write stays here
//! until KVM has taken it, and reads see it first.
//!
//! Without sync regs every access is the classic ioctl.
//!
//! `kvm_sregs::interrupt_bitmap` never travels: KVM queues the interrupt a
//! written bitmap names, and the monitor queues the upcall interrupt itself
//! (KVM_INTERRUPT) and tracks it. KVM also only ever sets bits in the sync
//! area's copy (it does not clear the area before it stores the special
//! registers), so a bit that was true at one exit stays there: written back,
//! it re-queued the upcall at every entry, and a vCPU took nothing but
//! upcall interrupts for ever (the 2-vCPU boot stall).

use kvm_bindings::{
    kvm_regs, kvm_sregs, kvm_vcpu_events, KVM_SYNC_X86_EVENTS, KVM_SYNC_X86_REGS,
    KVM_SYNC_X86_SREGS,
};
use kvm_ioctls::{SyncReg, VcpuFd};

/// The register sets the exit path needs copied out at every exit.
pub const NEEDED: u32 = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {err}")]
pub struct RegError {
    what: &'static str,
    err: kvm_ioctls::Error,
}

fn kerr(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> RegError {
    move |err| RegError { what, err }
}

/// Register access for one vCPU.
#[derive(Debug, Default)]
pub struct RegSync {
    /// The host offers sync regs and this vCPU uses them.
    on: bool,
    /// `kvm_run` holds the state of the last exit (a KVM_RUN has returned).
    valid: bool,
    regs: Option<kvm_regs>,
    sregs: Option<kvm_sregs>,
    /// Register ioctls made (for `--stats` and tests).
    pub ioctls: u64,
}

impl RegSync {
    /// Use the sync area when `on` (the host profile's answer).
    pub fn new(fd: &mut VcpuFd, on: bool) -> RegSync {
        if on {
            fd.set_sync_valid_reg(SyncReg::Register);
            fd.set_sync_valid_reg(SyncReg::SystemRegister);
            fd.set_sync_valid_reg(SyncReg::VcpuEvents);
        }
        RegSync {
            on,
            ..RegSync::default()
        }
    }

    pub fn get_regs(&mut self, fd: &VcpuFd) -> Result<kvm_regs, RegError> {
        if let Some(r) = self.regs {
            return Ok(r);
        }
        if self.on && self.valid {
            return Ok(fd.sync_regs().regs);
        }
        self.ioctls += 1;
        fd.get_regs().map_err(kerr("KVM_GET_REGS"))
    }

    pub fn get_sregs(&mut self, fd: &VcpuFd) -> Result<kvm_sregs, RegError> {
        if let Some(s) = self.sregs {
            return Ok(s);
        }
        if self.on && self.valid {
            return Ok(fd.sync_regs().sregs);
        }
        self.ioctls += 1;
        fd.get_sregs()
            .map(without_interrupts)
            .map_err(kerr("KVM_GET_SREGS"))
    }

    /// The pending/injected events of the last exit.
    pub fn get_events(&mut self, fd: &VcpuFd) -> Result<kvm_vcpu_events, RegError> {
        if self.on && self.valid {
            return Ok(fd.sync_regs().events);
        }
        self.ioctls += 1;
        fd.get_vcpu_events().map_err(kerr("KVM_GET_VCPU_EVENTS"))
    }

    pub fn set_regs(&mut self, fd: &VcpuFd, r: &kvm_regs) -> Result<(), RegError> {
        if self.on {
            // What KVM already holds needs no write (and no reload on entry).
            let same = self.regs.is_none() && self.valid && fd.sync_regs().regs == *r;
            self.regs = (!same).then_some(*r);
            return Ok(());
        }
        self.ioctls += 1;
        fd.set_regs(r).map_err(kerr("KVM_SET_REGS"))
    }

    pub fn set_sregs(&mut self, fd: &VcpuFd, s: &kvm_sregs) -> Result<(), RegError> {
        let s = &without_interrupts(*s);
        if self.on {
            // Loading special registers is the costly part of an entry
            // (segment and MMU state): skip it when nothing changed.
            let same = self.sregs.is_none() && self.valid && fd.sync_regs().sregs == *s;
            self.sregs = (!same).then_some(*s);
            return Ok(());
        }
        self.ioctls += 1;
        fd.set_sregs(s).map_err(kerr("KVM_SET_SREGS"))
    }

    /// Hand pending writes to KVM; call right before KVM_RUN.
    pub fn before_run(&mut self, fd: &mut VcpuFd) {
        if !self.on {
            return;
        }
        if let Some(r) = self.regs {
            fd.sync_regs_mut().regs = r;
            fd.set_sync_dirty_reg(SyncReg::Register);
        }
        if let Some(s) = self.sregs {
            fd.sync_regs_mut().sregs = s;
            fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        }
    }

    /// Forget the writes KVM has taken; call right after KVM_RUN returns.
    pub fn after_run(&mut self, fd: &mut VcpuFd) {
        if !self.on {
            return;
        }
        self.valid = true;
        let area = &mut fd.sync_regs_mut().sregs;
        *area = without_interrupts(*area);
        let dirty = fd.get_kvm_run().kvm_dirty_regs;
        if dirty & u64::from(KVM_SYNC_X86_REGS) == 0 {
            self.regs = None;
        }
        if dirty & u64::from(KVM_SYNC_X86_SREGS) == 0 {
            self.sregs = None;
        }
    }

    /// The registers for a report, without counting or failing.
    pub fn peek(&self, fd: &VcpuFd) -> (kvm_regs, kvm_sregs) {
        let synced = self.on && self.valid;
        let r = self.regs.unwrap_or_else(|| {
            if synced {
                fd.sync_regs().regs
            } else {
                fd.get_regs().unwrap_or_default()
            }
        });
        let s = self.sregs.unwrap_or_else(|| {
            if synced {
                fd.sync_regs().sregs
            } else {
                fd.get_sregs().unwrap_or_default()
            }
        });
        (r, s)
    }
}

/// `s` with no interrupt queued through it (see the module text).
fn without_interrupts(mut s: kvm_sregs) -> kvm_sregs {
    s.interrupt_bitmap = [0; 4];
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpu() -> Option<(kvm_ioctls::VmFd, VcpuFd)> {
        let kvm = kvm_ioctls::Kvm::new().ok()?;
        let vm = kvm.create_vm().ok()?;
        let fd = vm.create_vcpu(0).ok()?;
        Some((vm, fd))
    }

    #[test]
    fn no_interrupt_is_queued_through_written_special_registers() {
        let mut s = kvm_sregs::default();
        s.interrupt_bitmap[3] = 1 << 48; // vector 240, the upcall
        s.cr3 = 0x1000;
        let w = without_interrupts(s);
        assert_eq!(w.interrupt_bitmap, [0; 4]);
        assert_eq!(w.cr3, 0x1000);
    }

    /// The sync area's stale bit (KVM never clears it) is dropped after
    /// every KVM_RUN, and never handed back with a write.
    #[test]
    fn a_stale_bit_in_the_sync_area_is_not_written_back() {
        let Some((_vm, mut fd)) = vcpu() else {
            if std::env::var_os("CI").is_some() {
                panic!("no /dev/kvm with CI set");
            }
            return;
        };
        let mut rs = RegSync::new(&mut fd, true);
        fd.sync_regs_mut().sregs.interrupt_bitmap[3] = 1 << 48;
        rs.after_run(&mut fd);
        assert_eq!(fd.sync_regs().sregs.interrupt_bitmap, [0; 4]);
        let mut s = rs.get_sregs(&fd).unwrap();
        assert_eq!(s.interrupt_bitmap, [0; 4]);
        s.interrupt_bitmap[3] = 1 << 48;
        s.cr3 = 0x2000;
        rs.set_sregs(&fd, &s).unwrap();
        rs.before_run(&mut fd);
        assert_eq!(fd.sync_regs().sregs.interrupt_bitmap, [0; 4]);
        assert_eq!(fd.sync_regs().sregs.cr3, 0x2000);
    }
}
