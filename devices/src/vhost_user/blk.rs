//! One blkif ring served by a vhost-user-blk backend, without copying:
//! each request becomes a virtio-blk chain (one indirect descriptor table
//! per request slot, in the shadow region) whose data descriptors are the
//! granted guest frames themselves; the grants stay mapped until the
//! backend has used the chain. Used chains become blkif responses and
//! event-channel notifications. The thread waits in epoll on the guest's
//! notifications, the backend's call eventfd, its socket and a stop eventfd.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vhost::vhost_user::Frontend;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::translate::Slot;
pub use super::translate::{layout, Translator, MAX_DATA_DESCS, MAX_RING_ORDER, QUEUE_SIZE};
use crate::blkback::proto::{self, ENTRY};
use crate::ring::BackRing;

pub struct Bridge {
    pub tr: Translator,
    pub ring: BackRing,
    pub port: u32,
    /// The connection (shared by the disk's queues): its socket's hang-up.
    pub fe: Arc<Frontend>,
    /// Kicks the backend.
    pub kick: EventFd,
    /// The backend's completions.
    pub call: EventFd,
    /// The guest's notifications (the Kick's eventfd).
    pub guest: EventFd,
    pub stop: Arc<EventFd>,
}

const T_GUEST: u64 = 0;
const T_CALL: u64 = 1;
const T_STOP: u64 = 2;
const T_SOCK: u64 = 3;

impl Bridge {
    pub fn run(mut self) {
        let mut slots: Vec<Option<Slot>> = (0..QUEUE_SIZE).map(|_| None).collect();
        let mut free: Vec<u16> = (0..QUEUE_SIZE).rev().collect();
        let epoll = match self.epoll() {
            Ok(e) => e,
            Err(e) => {
                log::warn!("vhost-user {}: epoll: {e}", self.tr.name);
                return;
            }
        };
        let mut events = vec![EpollEvent::default(); 4];
        let mut gone = false;
        let mut bogus = 0u32;
        let mut stopping = false;
        let mut entry = [0u8; ENTRY];
        loop {
            let mut kick = false;
            let mut notify = false;
            // Take requests while a slot is free.
            while !stopping && !free.is_empty() && self.ring.next_request(&mut entry) {
                let p = proto::parse(&entry, proto::MAX_INDIRECT_SEGMENTS);
                let s = *free.last().unwrap_or(&0);
                let r = if gone {
                    Err(proto::RSP_ERROR)
                } else {
                    self.tr.submit(s, &p)
                };
                match r {
                    Ok(slot) => {
                        free.pop();
                        slots[usize::from(s)] = Some(slot);
                        kick |= self.tr.vring.push(&self.tr.shadow, s);
                    }
                    Err(status) => {
                        self.ring.put_response(&proto::response(p.id, p.op, status));
                        notify |= self.ring.push_responses();
                    }
                }
            }
            if kick {
                let _ = self.kick.write(1);
            }
            // Completions.
            while let Some((id, _)) = self.tr.vring.pop_used(&self.tr.shadow) {
                let slot = u16::try_from(id)
                    .ok()
                    .filter(|&s| s < QUEUE_SIZE)
                    .and_then(|s| slots[usize::from(s)].take().map(|slot| (s, slot)));
                let Some((s, mut slot)) = slot else {
                    // Logged a few times only: the backend is trusted, but
                    // the log must not grow without bound.
                    bogus += 1;
                    if bogus <= 8 {
                        log::warn!(
                            "vhost-user {}: the backend used chain {id}, which it does not hold",
                            self.tr.name
                        );
                    }
                    continue;
                };
                let status = self.tr.status(s);
                if status == proto::RSP_OKAY {
                    if let Some((sector, n)) = slot.discard_rest {
                        slot.discard_rest = self.tr.discard_piece(s, sector, n);
                        slots[usize::from(s)] = Some(slot);
                        if self.tr.vring.push(&self.tr.shadow, s) {
                            let _ = self.kick.write(1);
                        }
                        continue;
                    }
                }
                self.ring
                    .put_response(&proto::response(slot.id, slot.op, status));
                notify |= self.ring.push_responses();
                drop(slot);
                free.push(s);
            }
            if notify {
                self.tr.ctx.notify(self.port);
            }
            if gone && free.len() < usize::from(QUEUE_SIZE) {
                // The backend process is gone: nothing will write to the
                // guest's pages any more; fail what it held.
                for (s, slot) in slots.iter_mut().enumerate() {
                    if let Some(slot) = slot.take() {
                        self.ring.put_response(&proto::response(
                            slot.id,
                            slot.op,
                            proto::RSP_ERROR,
                        ));
                        free.push(s as u16);
                    }
                }
                if self.ring.push_responses() {
                    self.tr.ctx.notify(self.port);
                }
                continue;
            }
            if stopping && free.len() == usize::from(QUEUE_SIZE) {
                return;
            }
            if !stopping && !free.is_empty() && self.ring.final_check_for_requests() {
                continue;
            }
            let timeout = if stopping { 5000 } else { -1 };
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vhost-user {}: epoll: {e}", self.tr.name);
                    return;
                }
            };
            if n == 0 && stopping {
                // The backend kept requests past the deadline: their pages
                // stay granted (mapped) rather than be handed back while
                // it may still write to them.
                log::warn!(
                    "vhost-user {}: {} request(s) still in the backend at disconnect",
                    self.tr.name,
                    usize::from(QUEUE_SIZE) - free.len()
                );
                std::mem::forget(slots);
                return;
            }
            for e in &events[..n] {
                match e.data() {
                    T_GUEST => {
                        let _ = self.guest.read();
                    }
                    T_CALL => {
                        let _ = self.call.read();
                    }
                    T_STOP => stopping = true,
                    _ => {
                        if !gone {
                            log::warn!(
                                "vhost-user {}: the backend closed its socket",
                                self.tr.name
                            );
                        }
                        gone = true;
                        let _ = epoll.ctl(
                            ControlOperation::Delete,
                            self.fe.as_raw_fd(),
                            EpollEvent::default(),
                        );
                    }
                }
            }
        }
    }

    fn epoll(&self) -> std::io::Result<Epoll> {
        let ep = Epoll::new()?;
        for (fd, t, ev) in [
            (self.guest.as_raw_fd(), T_GUEST, EventSet::IN),
            (self.call.as_raw_fd(), T_CALL, EventSet::IN),
            (self.stop.as_raw_fd(), T_STOP, EventSet::IN),
            (
                self.fe.as_raw_fd(),
                T_SOCK,
                EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR,
            ),
        ] {
            ep.ctl(ControlOperation::Add, fd, EpollEvent::new(ev, t))?;
        }
        Ok(ep)
    }
}
