//! EVTCHNOP_* hypercalls.

use crate::abi::errno::*;
use crate::evtchn::{self, PortState};
use crate::vcpu::{field, PvVcpu};

pub fn event_channel_op(v: &mut PvVcpu, cmd: u64, arg: u64) -> Result<i64, i64> {
    let dom = v.dom.clone();
    let si = dom.shared_info_gpa();
    match cmd {
        // alloc_unbound {u16 dom, u16 remote_dom, OUT u32 port}
        6 => {
            let mut b = [0u8; 8];
            v.copy_from(arg, &mut b)?;
            let d = u16::from_le_bytes([b[0], b[1]]);
            if u64::from(d) != crate::abi::DOMID_SELF && d != dom.layout.domid {
                return Err(-ESRCH);
            }
            let remote = u16::from_le_bytes([b[2], b[3]]);
            let port = dom
                .evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .alloc_unbound(remote)?;
            v.copy_to(field(arg, 4)?, &port.to_le_bytes())?;
            Ok(0)
        }
        // bind_virq {virq, vcpu, OUT port}
        1 => {
            let virq = v.read_u32(arg)?;
            let vcpu = v.read_u32(field(arg, 4)?)?;
            let port = dom
                .evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bind_virq(virq, vcpu)?;
            v.copy_to(field(arg, 8)?, &port.to_le_bytes())?;
            Ok(0)
        }
        // bind_ipi {vcpu, OUT port}
        7 => {
            let vcpu = v.read_u32(arg)?;
            let port = dom
                .evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bind_ipi(vcpu)?;
            v.copy_to(field(arg, 4)?, &port.to_le_bytes())?;
            Ok(0)
        }
        // close {port}
        3 => {
            let port = v.read_u32(arg)?;
            dom.evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .close(port)?;
            evtchn::clear_pending(&*dom.mem, si, port);
            Ok(0)
        }
        // send {port}
        4 => {
            let port = v.read_u32(arg)?;
            let state = dom
                .evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state(port);
            match state {
                PortState::Interdomain { backend } => dom.platform.backend_notify(backend, port),
                PortState::Ipi => dom.raise_port(port),
                PortState::Unbound { .. } => {}
                PortState::Free | PortState::Virq { .. } => return Err(-EINVAL),
            }
            Ok(0)
        }
        // status
        5 => {
            let port = v.read_u32(field(arg, 4)?)?;
            let (status, vcpu, a, b) = dom
                .evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .status(port)?;
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&status.to_le_bytes());
            out[4..8].copy_from_slice(&vcpu.to_le_bytes());
            out[8..12].copy_from_slice(&a.to_le_bytes());
            out[12..16].copy_from_slice(&b.to_le_bytes());
            v.copy_to(field(arg, 8)?, &out)?;
            Ok(0)
        }
        // bind_vcpu {port, vcpu}
        8 => {
            let port = v.read_u32(arg)?;
            let vcpu = v.read_u32(field(arg, 4)?)?;
            dom.evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bind_vcpu(port, vcpu)?;
            Ok(0)
        }
        // unmask {port}
        9 => {
            let port = v.read_u32(arg)?;
            let target = dom
                .evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .vcpu_of(port);
            if let Some(t) = target {
                if evtchn::unmask(&*dom.mem, si, dom.vcpu_info_gpa(t), port) {
                    dom.platform.kick(t);
                }
            }
            Ok(0)
        }
        // reset
        10 => {
            let keep = [dom.layout.console_port, dom.layout.store_port];
            dom.evtchn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reset(&keep);
            Ok(0)
        }
        // bind_interdomain, init_control, expand_array, set_priority: FIFO ABI not offered.
        _ => {
            dom.log_once("unimplemented event_channel_op", cmd, || {
                format!("unimplemented event_channel_op {cmd} -> -ENOSYS")
            });
            Err(-ENOSYS)
        }
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;
    use crate::abi::shinfo;
    use crate::testing::{map_low_memory, test_domain};

    /// Xen clears a port's pending bit when it is closed (evtchn_free).
    /// Without that, a vCPU's IPI port closed at CPU hot-unplug and bound
    /// again at hot-plug fired at once with an event of its old binding
    /// (Linux: "kernel BUG at arch/x86/xen/spinlock.c:62" when `xenkvm
    /// vcpu-set` brought a vCPU back).
    #[test]
    fn close_clears_the_pending_bit() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        let arg = 0x10000u64;
        // bind_ipi {vcpu 0, OUT port}
        dom.mem.write(arg, &[0u8; 8]).unwrap();
        assert_eq!(event_channel_op(&mut v, 7, arg), Ok(0));
        let port = dom.mem.read_u32(arg + 4).unwrap();
        dom.raise_port(port);
        let word = dom.layout.shared_info_gpa + shinfo::EVTCHN_PENDING + u64::from(port / 64) * 8;
        let bit = 1u64 << (port % 64);
        assert_ne!(dom.mem.read_u64(word).unwrap() & bit, 0, "not raised");
        // close {port}
        dom.mem.write(arg, &port.to_le_bytes()).unwrap();
        assert_eq!(event_channel_op(&mut v, 3, arg), Ok(0));
        assert_eq!(
            dom.mem.read_u64(word).unwrap() & bit,
            0,
            "still pending after close"
        );
        // The same port number bound again starts quiet.
        dom.mem.write(arg, &[0u8; 8]).unwrap();
        assert_eq!(event_channel_op(&mut v, 7, arg), Ok(0));
        assert_eq!(dom.mem.read_u32(arg + 4).unwrap(), port);
        assert_eq!(dom.mem.read_u64(word).unwrap() & bit, 0);
    }
}
