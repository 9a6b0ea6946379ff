//! A vhost-user-net backend as the host end of a vif, in the place of the
//! tap: netback's ring handling is unchanged (it talks to a [`Link`]); this
//! link moves its frames through the backend's two virtqueues, whose rings
//! and packet buffers are in the link's own shadow region (the only memory
//! the backend is given). Unlike the disk bridge this copies each frame
//! once more (guest pages -> netback's frame -> shadow buffer, and back):
//! netback builds whole frames, with the offload header, before sending.
//!
//! Offloads are not negotiated with the backend (no GSO or checksum
//! offload either way, so any backend can take the frames): the vif offers
//! the guest no GSO, and a partial checksum from the guest is completed
//! here. Received frames are at most one 4 KiB buffer.

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::split::Descriptor;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::shadow::{Shadow, SHADOW_GPA};
use super::vring::{DriverRing, VringLayout};
use super::VhostError;
use crate::netback::csum;
use crate::netback::proto::{VnetHdr, MAX_PACKET, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_HDR_LEN};
use crate::netback::tap::Link;

const RXQ: u16 = 256;
const TXQ: u16 = 64;
const RX_BUF: usize = 4096;
/// A whole frame with its header (64 KiB + header, rounded).
const TX_BUF: usize = 68 * 1024;
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Queue {
    ring: DriverRing,
    kick: EventFd,
    call: EventFd,
    /// TX: buffers not in the backend's hands.
    free: Vec<u16>,
}

pub struct VhostNetLink {
    _fe: Mutex<Frontend>,
    shadow: Shadow,
    rx: Mutex<Queue>,
    tx: Mutex<Queue>,
    rx_bufs: usize,
    tx_bufs: usize,
    /// The virtio-net header's size on this connection (12 with VERSION_1).
    hdr: usize,
}

fn wait(fd: &EventFd, timeout: Duration) {
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    let _ = fd.read();
}

impl VhostNetLink {
    /// Connect to the backend at `path` and start both queues.
    pub fn connect(path: &Path) -> Result<VhostNetLink, VhostError> {
        let step =
            |what: &'static str| move |e: vhost::Error| VhostError::Protocol(what, e.to_string());
        let io = VhostError::Shadow;
        let rxl = VringLayout::at(0, RXQ);
        let txl = VringLayout::at(rxl.end, TXQ);
        let rx_bufs = txl.end;
        let tx_bufs = rx_bufs + RX_BUF * usize::from(RXQ);
        let shadow = Shadow::new(tx_bufs + TX_BUF * usize::from(TXQ))?;
        let sock = std::os::unix::net::UnixStream::connect(path).map_err(VhostError::Connect)?;
        let _ = sock.set_read_timeout(Some(REPLY_TIMEOUT));
        let _ = sock.set_write_timeout(Some(REPLY_TIMEOUT));
        let mut fe = Frontend::from_stream(sock, 2);
        fe.set_owner().map_err(step("SET_OWNER"))?;
        let offered = fe.get_features().map_err(step("GET_FEATURES"))?;
        let proto = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let features = offered & (proto | 1 << VIRTIO_F_VERSION_1);
        if offered & proto != 0 {
            fe.get_protocol_features()
                .map_err(step("GET_PROTOCOL_FEATURES"))?;
            fe.set_protocol_features(VhostUserProtocolFeatures::empty())
                .map_err(step("SET_PROTOCOL_FEATURES"))?;
        }
        fe.set_features(features).map_err(step("SET_FEATURES"))?;
        fe.set_mem_table(&[vhost::VhostUserMemoryRegionInfo {
            guest_phys_addr: SHADOW_GPA,
            memory_size: shadow.len() as u64,
            userspace_addr: shadow.host_addr(),
            mmap_offset: 0,
            mmap_handle: shadow.fd(),
        }])
        .map_err(step("SET_MEM_TABLE"))?;
        let hdr = if features & 1 << VIRTIO_F_VERSION_1 != 0 {
            12
        } else {
            VNET_HDR_LEN
        };
        let mut queues = Vec::new();
        for (i, l) in [(0usize, rxl), (1, txl)] {
            let ring = DriverRing::new(&shadow, l);
            let kick = EventFd::new(EFD_NONBLOCK).map_err(io)?;
            let call = EventFd::new(EFD_NONBLOCK).map_err(io)?;
            let base = shadow.host_addr();
            fe.set_vring_num(i, l.size).map_err(step("SET_VRING_NUM"))?;
            fe.set_vring_base(i, 0).map_err(step("SET_VRING_BASE"))?;
            fe.set_vring_addr(
                i,
                &VringConfigData {
                    queue_max_size: l.size,
                    queue_size: l.size,
                    flags: 0,
                    desc_table_addr: base + l.desc as u64,
                    used_ring_addr: base + l.used as u64,
                    avail_ring_addr: base + l.avail as u64,
                    log_addr: None,
                },
            )
            .map_err(step("SET_VRING_ADDR"))?;
            fe.set_vring_call(i, &call)
                .map_err(step("SET_VRING_CALL"))?;
            fe.set_vring_kick(i, &kick)
                .map_err(step("SET_VRING_KICK"))?;
            queues.push(Queue {
                ring,
                kick,
                call,
                free: Vec::new(),
            });
        }
        let mut tx = queues.pop().unwrap_or_else(|| unreachable!());
        let mut rx = queues.pop().unwrap_or_else(|| unreachable!());
        // Every receive buffer goes to the backend; every send buffer is free.
        for i in 0..RXQ {
            let addr = SHADOW_GPA + (rx_bufs + RX_BUF * usize::from(i)) as u64;
            let d = Descriptor::new(addr, RX_BUF as u32, VRING_DESC_F_WRITE as u16, 0);
            rx.ring.set_desc(&shadow, i, d);
            rx.ring.push(&shadow, i);
        }
        tx.free = (0..TXQ).rev().collect();
        if features & proto != 0 {
            for i in 0..2 {
                fe.set_vring_enable(i, true)
                    .map_err(step("SET_VRING_ENABLE"))?;
            }
        }
        let _ = rx.kick.write(1);
        Ok(VhostNetLink {
            _fe: Mutex::new(fe),
            shadow,
            rx: Mutex::new(rx),
            tx: Mutex::new(tx),
            rx_bufs,
            tx_bufs,
            hdr,
        })
    }
}

impl Link for VhostNetLink {
    /// `frame`: netback's 10-byte virtio-net header, then the packet.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let Some(h) = VnetHdr::parse(frame) else {
            return Ok(());
        };
        let packet = &frame[VNET_HDR_LEN..];
        if h.gso_type != VNET_GSO_NONE || packet.len() > MAX_PACKET {
            log::debug!("vhost-user-net: a GSO frame, not offered: dropped");
            return Ok(());
        }
        let mut q = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((id, _)) = q.ring.pop_used(&self.shadow) {
            if id < u32::from(TXQ) && !q.free.contains(&(id as u16)) {
                q.free.push(id as u16);
            }
        }
        if q.free.is_empty() {
            wait(&q.call, Duration::from_millis(100));
            while let Some((id, _)) = q.ring.pop_used(&self.shadow) {
                if id < u32::from(TXQ) && !q.free.contains(&(id as u16)) {
                    q.free.push(id as u16);
                }
            }
        }
        let Some(s) = q.free.pop() else {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "backend full"));
        };
        let mut buf = vec![0u8; self.hdr + packet.len()];
        buf[self.hdr..].copy_from_slice(packet);
        if h.flags & VNET_F_NEEDS_CSUM != 0 {
            let udp = csum::find_l4(packet).is_some_and(|l| l.proto == csum::IPPROTO_UDP);
            let (start, off) = (usize::from(h.csum_start), usize::from(h.csum_offset));
            if !csum::complete(&mut buf[self.hdr..], start, off, udp) {
                q.free.push(s);
                return Ok(());
            }
        }
        let off = self.tx_bufs + TX_BUF * usize::from(s);
        self.shadow.write(off, &buf);
        let d = Descriptor::new(SHADOW_GPA + off as u64, buf.len() as u32, 0, 0);
        q.ring.set_desc(&self.shadow, s, d);
        if q.ring.push(&self.shadow, s) {
            q.kick.write(1)?;
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let mut q = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        let mut used = q.ring.pop_used(&self.shadow);
        if used.is_none() && !timeout.is_zero() {
            wait(&q.call, timeout);
            used = q.ring.pop_used(&self.shadow);
        }
        let Some((id, len)) = used else {
            return Ok(None);
        };
        if id >= u32::from(RXQ) {
            log::debug!("vhost-user-net: backend used unknown buffer {id}");
            return Ok(None);
        }
        let s = id as u16;
        let len = (len as usize).min(RX_BUF);
        let off = self.rx_bufs + RX_BUF * usize::from(s);
        let n = if len >= self.hdr && len - self.hdr + VNET_HDR_LEN <= buf.len() {
            // netback's header is the first 10 bytes of virtio's; no offload
            // was negotiated, so it is all zeros anyway.
            buf[..VNET_HDR_LEN].fill(0);
            self.shadow.read(
                off + self.hdr,
                &mut buf[VNET_HDR_LEN..VNET_HDR_LEN + len - self.hdr],
            );
            Some(VNET_HDR_LEN + len - self.hdr)
        } else {
            None
        };
        if q.ring.push(&self.shadow, s) {
            q.kick.write(1)?;
        }
        Ok(n)
    }

    fn set_offload(&self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}
