//! A vhost-user-blk disk read by xenkvm itself, before the guest exists
//! (the built-in pygrub): one synchronous request at a time through a
//! bounce buffer in the client's own shadow region, the only memory the
//! backend is given. Not the guest's data path (that is `blk`, zero-copy).

use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::Frontend;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::conn::{self, BlkInfo};
use super::shadow::{Shadow, SHADOW_GPA};
use super::vring::{DriverRing, VringLayout};
use super::VhostError;

/// Bytes moved per request.
pub const BOUNCE: usize = 1 << 20;
/// A request gets this long to complete.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    _fe: Frontend,
    shadow: Shadow,
    vring: DriverRing,
    kick: EventFd,
    call: EventFd,
    pub info: BlkInfo,
    hdr: usize,
    status: usize,
    bounce: usize,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, VhostError> {
        let io = VhostError::Shadow;
        let layout = VringLayout::at(0, 4);
        let (hdr, status, bounce) = (layout.end, layout.end + 16, layout.end + 4096);
        let shadow = Shadow::new(bounce + BOUNCE)?;
        let vring = DriverRing::new(&shadow, layout);
        let kick = EventFd::new(EFD_NONBLOCK).map_err(io)?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(io)?;
        let (mut fe, info) = conn::open(path)?;
        conn::set_mem_table(&mut fe, None, &shadow)?;
        conn::start_queue(&mut fe, 0, &shadow, layout, &kick, &call)?;
        Ok(Client {
            _fe: fe,
            shadow,
            vring,
            kick,
            call,
            info,
            hdr,
            status,
            bounce,
        })
    }

    /// Read `len` bytes (sectors) at `sector` into the bounce buffer.
    fn read_sectors(&mut self, sector: u64, len: usize) -> std::io::Result<()> {
        assert!(len <= BOUNCE && len.is_multiple_of(512));
        let gpa = |o: usize| SHADOW_GPA + o as u64;
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.shadow.write(self.hdr, &h);
        self.shadow.write(self.status, &[0xff]);
        let (next, w) = (VRING_DESC_F_NEXT as u16, VRING_DESC_F_WRITE as u16);
        let s = &self.shadow;
        self.vring
            .set_desc(s, 0, Descriptor::new(gpa(self.hdr), 16, next, 1));
        self.vring.set_desc(
            s,
            1,
            Descriptor::new(gpa(self.bounce), len as u32, w | next, 2),
        );
        self.vring
            .set_desc(s, 2, Descriptor::new(gpa(self.status), 1, w, 0));
        if self.vring.push(&self.shadow, 0) {
            self.kick.write(1)?;
        }
        let start = std::time::Instant::now();
        loop {
            if self.vring.pop_used(&self.shadow).is_some() {
                break;
            }
            let left = TIMEOUT.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the vhost-user backend did not answer",
                ));
            }
            let mut p = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.call),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            let _ = self.call.read();
        }
        let mut st = [0xffu8];
        self.shadow.read(self.status, &mut st);
        if u32::from(st[0]) != VIRTIO_BLK_S_OK {
            return Err(std::io::Error::other(format!(
                "the vhost-user backend answered status {}",
                st[0]
            )));
        }
        Ok(())
    }

    /// Fill `buf` from byte `offset` (any alignment).
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let first = pos / 512 * 512;
            let skip = (pos - first) as usize;
            let want = (buf.len() - done).min(BOUNCE - skip);
            let span = (skip + want).div_ceil(512) * 512;
            self.read_sectors(first / 512, span)?;
            self.shadow
                .read(self.bounce + skip, &mut buf[done..done + want]);
            done += want;
        }
        Ok(())
    }
}
