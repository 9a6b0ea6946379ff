//! Event channels, 2-level ABI (4096 ports on 64-bit).
//!
//! Port state lives here; pending/mask bits live in the guest's shared_info
//! and the selector/upcall flags in each vCPU's vcpu_info, updated with
//! atomic read-modify-writes because the guest changes them concurrently.

use crate::abi::{errno::*, shinfo};
use crate::domain::DomainLayout;
use crate::mem::GuestMem;

pub const NR_PORTS: u32 = 4096;
pub const NR_VIRQS: u32 = 24;
pub const VIRQ_TIMER: u32 = 0;

/// Backend ids for interdomain ports served by the monitor.
pub const BACKEND_CONSOLE: u32 = 0;
pub const BACKEND_XENSTORE: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortState {
    #[default]
    Free,
    Unbound {
        remote: u16,
    },
    Interdomain {
        backend: u32,
    },
    Virq {
        virq: u32,
    },
    Ipi,
}

#[derive(Debug, Clone, Copy, Default)]
struct Port {
    state: PortState,
    vcpu: u32,
}

pub struct EventChannels {
    ports: Vec<Port>,
    max_vcpus: u32,
    /// (vcpu, virq) -> port
    virqs: Vec<[u32; NR_VIRQS as usize]>,
}

/// Status values of EVTCHNOP_status.
const STATUS_CLOSED: u32 = 0;
const STATUS_UNBOUND: u32 = 1;
const STATUS_INTERDOMAIN: u32 = 2;
const STATUS_VIRQ: u32 = 4;
const STATUS_IPI: u32 = 5;

impl EventChannels {
    pub fn new(layout: &DomainLayout) -> EventChannels {
        let mut ev = EventChannels {
            ports: vec![Port::default(); NR_PORTS as usize],
            max_vcpus: layout.max_vcpus,
            virqs: vec![[0; NR_VIRQS as usize]; layout.max_vcpus as usize],
        };
        if layout.console_port != 0 {
            ev.set(
                layout.console_port,
                PortState::Interdomain {
                    backend: BACKEND_CONSOLE,
                },
                0,
            );
        }
        if layout.store_port != 0 {
            ev.set(
                layout.store_port,
                PortState::Interdomain {
                    backend: BACKEND_XENSTORE,
                },
                0,
            );
        }
        ev
    }

    fn set(&mut self, port: u32, state: PortState, vcpu: u32) {
        if let Some(p) = self.ports.get_mut(port as usize) {
            *p = Port { state, vcpu };
        }
    }

    pub fn state(&self, port: u32) -> PortState {
        self.ports
            .get(port as usize)
            .map(|p| p.state)
            .unwrap_or_default()
    }

    /// The vCPU a bound port delivers to.
    pub fn vcpu_of(&self, port: u32) -> Option<u32> {
        match self.ports.get(port as usize) {
            Some(p) if p.state != PortState::Free && port != 0 => Some(p.vcpu),
            _ => None,
        }
    }

    pub fn virq_port(&self, vcpu: u32, virq: u32) -> Option<u32> {
        let p = *self.virqs.get(vcpu as usize)?.get(virq as usize)?;
        (p != 0).then_some(p)
    }

    fn alloc(&mut self, state: PortState, vcpu: u32) -> Result<u32, i64> {
        let port = (1..NR_PORTS)
            .find(|&p| self.ports[p as usize].state == PortState::Free)
            .ok_or(-ENOSPC)?;
        self.set(port, state, vcpu);
        Ok(port)
    }

    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, i64> {
        if virq >= NR_VIRQS {
            return Err(-EINVAL);
        }
        if vcpu >= self.max_vcpus {
            return Err(-ENOENT);
        }
        if self.virq_port(vcpu, virq).is_some() {
            return Err(-EEXIST);
        }
        let port = self.alloc(PortState::Virq { virq }, vcpu)?;
        self.virqs[vcpu as usize][virq as usize] = port;
        Ok(port)
    }

    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, i64> {
        if vcpu >= self.max_vcpus {
            return Err(-ENOENT);
        }
        self.alloc(PortState::Ipi, vcpu)
    }

    pub fn alloc_unbound(&mut self, remote: u16) -> Result<u32, i64> {
        self.alloc(PortState::Unbound { remote }, 0)
    }

    /// Connect a guest's port, left unbound for domain 0, to a monitor backend.
    pub fn bind_backend(&mut self, port: u32, backend: u32) -> Result<(), i64> {
        match self.ports.get_mut(port as usize) {
            Some(p) if port != 0 && p.state == (PortState::Unbound { remote: 0 }) => {
                p.state = PortState::Interdomain { backend };
                Ok(())
            }
            _ => Err(-EINVAL),
        }
    }

    /// The backend closed its end: the guest's port is unbound again (as
    /// in Xen when the remote end of an interdomain channel closes).
    pub fn unbind_backend(&mut self, port: u32, backend: u32) {
        if let Some(p) = self.ports.get_mut(port as usize) {
            if p.state == (PortState::Interdomain { backend }) {
                p.state = PortState::Unbound { remote: 0 };
            }
        }
    }

    pub fn close(&mut self, port: u32) -> Result<PortState, i64> {
        let p = self
            .ports
            .get_mut(port as usize)
            .filter(|p| port != 0 && p.state != PortState::Free)
            .ok_or(-EINVAL)?;
        let old = *p;
        *p = Port::default();
        if let PortState::Virq { virq } = old.state {
            if let Some(slot) = self
                .virqs
                .get_mut(old.vcpu as usize)
                .and_then(|v| v.get_mut(virq as usize))
            {
                *slot = 0;
            }
        }
        Ok(old.state)
    }

    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), i64> {
        if vcpu >= self.max_vcpus {
            return Err(-ENOENT);
        }
        let p = self
            .ports
            .get_mut(port as usize)
            .filter(|_| port != 0)
            .ok_or(-EINVAL)?;
        match p.state {
            PortState::Free => Err(-EINVAL),
            PortState::Virq { virq } if virq == VIRQ_TIMER => Err(-EINVAL),
            PortState::Ipi => Err(-EINVAL),
            _ => {
                p.vcpu = vcpu;
                Ok(())
            }
        }
    }

    /// EVTCHNOP_status payload: (status, vcpu, union word0, union word1).
    pub fn status(&self, port: u32) -> Result<(u32, u32, u32, u32), i64> {
        let p = self.ports.get(port as usize).ok_or(-EINVAL)?;
        Ok(match p.state {
            PortState::Free => (STATUS_CLOSED, p.vcpu, 0, 0),
            PortState::Unbound { remote } => (STATUS_UNBOUND, p.vcpu, remote.into(), 0),
            PortState::Interdomain { backend } => (STATUS_INTERDOMAIN, p.vcpu, 0, backend),
            PortState::Virq { virq } => (STATUS_VIRQ, p.vcpu, virq, 0),
            PortState::Ipi => (STATUS_IPI, p.vcpu, 0, 0),
        })
    }

    /// EVTCHNOP_reset: close everything but the builder's console/xenstore ports.
    pub fn reset(&mut self, keep: &[u32]) {
        for port in 1..NR_PORTS {
            if !keep.contains(&port) {
                let _ = self.close(port);
            }
        }
    }
}

fn word_addr(base: u64, port: u32) -> (u64, u64) {
    (base + u64::from(port / 64) * 8, 1u64 << (port % 64))
}

/// Mark `port` pending; returns true when the vCPU must be kicked.
pub fn set_pending(mem: &dyn GuestMem, shared_info: u64, vcpu_info: u64, port: u32) -> bool {
    if port == 0 || port >= NR_PORTS {
        return false;
    }
    let (pa, bit) = word_addr(shared_info + shinfo::EVTCHN_PENDING, port);
    match mem.fetch_or_u64(pa, bit) {
        Ok(old) if old & bit == 0 => {}
        _ => return false,
    }
    raise_if_unmasked(mem, shared_info, vcpu_info, port)
}

fn raise_if_unmasked(mem: &dyn GuestMem, shared_info: u64, vcpu_info: u64, port: u32) -> bool {
    let (ma, bit) = word_addr(shared_info + shinfo::EVTCHN_MASK, port);
    if mem.read_u64(ma).map(|m| m & bit != 0).unwrap_or(true) {
        return false;
    }
    let sel = 1u64 << (port / 64);
    match mem.fetch_or_u64(vcpu_info + shinfo::PENDING_SEL, sel) {
        Ok(old) if old & sel == 0 => {
            let _ = mem.write_u8(vcpu_info + shinfo::UPCALL_PENDING, 1);
            true
        }
        _ => false,
    }
}

/// Clear `port`'s pending bit, as Xen's evtchn_free does on close: a port
/// bound again later must not fire at once with an event of its previous
/// binding.
pub fn clear_pending(mem: &dyn GuestMem, shared_info: u64, port: u32) {
    if port == 0 || port >= NR_PORTS {
        return;
    }
    let (pa, bit) = word_addr(shared_info + shinfo::EVTCHN_PENDING, port);
    let _ = mem.fetch_and_u64(pa, !bit);
}

/// EVTCHNOP_unmask; returns true when the vCPU must be kicked.
pub fn unmask(mem: &dyn GuestMem, shared_info: u64, vcpu_info: u64, port: u32) -> bool {
    if port == 0 || port >= NR_PORTS {
        return false;
    }
    let (ma, bit) = word_addr(shared_info + shinfo::EVTCHN_MASK, port);
    match mem.fetch_and_u64(ma, !bit) {
        Ok(old) if old & bit != 0 => {}
        _ => return false,
    }
    let (pa, pbit) = word_addr(shared_info + shinfo::EVTCHN_PENDING, port);
    if mem.read_u64(pa).map(|p| p & pbit != 0).unwrap_or(false) {
        raise_if_unmasked(mem, shared_info, vcpu_info, port)
    } else {
        false
    }
}

/// Is `port` pending in shared_info?
pub fn is_pending(mem: &dyn GuestMem, shared_info: u64, port: u32) -> bool {
    let (pa, bit) = word_addr(shared_info + shinfo::EVTCHN_PENDING, port);
    port < NR_PORTS && mem.read_u64(pa).map(|p| p & bit != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;

    fn layout() -> DomainLayout {
        DomainLayout {
            domid: 1,
            nr_pages: 1,
            max_vcpus: 2,
            shared_info_gpa: 0,
            m2p_gpa: 0,
            m2p_entries: 0,
            m2p_va: 0,
            console_mfn: 0,
            console_port: 2,
            store_port: 1,
            store_mfn: 0,
            grant_gpa: 0,
            grant_frames: 0,
        }
    }

    #[test]
    fn bind_send_mask_unmask() {
        let m = VecMem::new(8192);
        let mut ev = EventChannels::new(&layout());
        let p = ev.bind_virq(VIRQ_TIMER, 0).unwrap();
        assert_eq!(p, 3, "ports 1 and 2 belong to xenstore and console");
        assert_eq!(ev.bind_virq(VIRQ_TIMER, 0), Err(-EEXIST));
        let vi = 0;
        assert!(set_pending(&m, 0, vi, p));
        assert_eq!(m.read_u8(vi).unwrap(), 1);
        assert!(!set_pending(&m, 0, vi, p), "already pending");
        // masked port: pending but no upcall
        m.write_u8(0, 0).unwrap();
        m.write_u64(shinfo::PENDING_SEL, 0).unwrap();
        m.write_u64(shinfo::EVTCHN_MASK, 1 << 4).unwrap();
        let ipi = ev.bind_ipi(1).unwrap();
        assert_eq!(ipi, 4);
        assert!(!set_pending(&m, 0, vi, ipi));
        assert_eq!(m.read_u8(0).unwrap(), 0);
        assert!(unmask(&m, 0, vi, ipi));
        assert_eq!(m.read_u8(0).unwrap(), 1);
        assert_eq!(ev.close(p), Ok(PortState::Virq { virq: 0 }));
        assert_eq!(ev.virq_port(0, 0), None);
        assert!(ev.close(0).is_err());
        assert!(ev.close(99999).is_err());
        assert!(!set_pending(&m, 0, vi, 5000));
    }
}
