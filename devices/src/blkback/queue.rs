//! One blkif ring served on its own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::io::{execute, Disk};
use super::proto::{self, ENTRY, MAX_INDIRECT_SEGMENTS};
use crate::notify::Kick;
use crate::ring::BackRing;
use crate::xenbus::BackendCtx;

/// A running queue; stopped and joined on drop.
pub struct Queue {
    stop: Arc<AtomicBool>,
    kick: Arc<Kick>,
    thread: Option<JoinHandle<()>>,
    ctx: BackendCtx,
    port: u32,
    backend_id: u32,
}

impl Queue {
    /// Serve `ring`, whose frontend notifies (and is notified on) `port`.
    pub fn start(
        ctx: &BackendCtx,
        name: String,
        ring: BackRing,
        port: u32,
        disk: Arc<Disk>,
    ) -> Option<Queue> {
        let kick = Arc::new(Kick::default());
        let backend_id = ctx.bind_port(port, kick.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (c, k, s) = (ctx.clone(), kick.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(&c, ring, port, &disk, &k, &s));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                log::warn!("blkback: cannot start a queue thread: {e}");
                ctx.unbind_port(port, backend_id);
                return None;
            }
        };
        Some(Queue {
            stop,
            kick,
            thread: Some(thread),
            ctx: ctx.clone(),
            port,
            backend_id,
        })
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ctx.unbind_port(self.port, self.backend_id);
    }
}

/// Answer every request on the ring now.
pub fn drain(ctx: &BackendCtx, ring: &mut BackRing, port: u32, disk: &Disk, buf: &mut Vec<u8>) {
    let mut entry = [0u8; ENTRY];
    while ring.next_request(&mut entry) {
        let p = proto::parse(&entry, MAX_INDIRECT_SEGMENTS);
        let status = match p.req {
            proto::Request::Discard { .. } if !disk.image.discard_supported() => {
                proto::RSP_EOPNOTSUPP
            }
            _ => execute(&ctx.dom, disk, &p, buf),
        };
        ring.put_response(&proto::response(p.id, p.op, status));
        if ring.push_responses() {
            ctx.notify(port);
        }
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new();
        }
    }
}

fn serve(
    ctx: &BackendCtx,
    mut ring: BackRing,
    port: u32,
    disk: &Disk,
    kick: &Kick,
    stop: &AtomicBool,
) {
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        drain(ctx, &mut ring, port, disk, &mut buf);
        if ring.broken().is_some() {
            // Nothing more is read from a broken ring; wait to be torn down.
            kick.wait(Duration::from_millis(200));
            continue;
        }
        if ring.final_check_for_requests() {
            continue;
        }
        kick.wait(Duration::from_millis(200));
    }
}
