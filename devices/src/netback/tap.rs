//! The host side of a vif: a Linux tap device (IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR), brought up and optionally attached to a bridge.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// Where the backend's frames go: a tap, or a fake in tests. Frames carry
/// a virtio-net header first.
pub trait Link: Send + Sync {
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// One frame into `buf`, waiting up to `timeout`; None on timeout.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
    /// TUN_F_* offloads the host may hand us.
    fn set_offload(&self, flags: u32) -> io::Result<()>;
}

pub const TUN_F_CSUM: u32 = 1;
pub const TUN_F_TSO4: u32 = 2;
pub const TUN_F_TSO6: u32 = 4;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFMTU: libc::c_ulong = 0x8922;
const SIOCSIFHWADDR: libc::c_ulong = 0x8924;
const SIOCGIFINDEX: libc::c_ulong = 0x8933;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
const IFF_UP: i16 = 1;

/// `struct ifreq`: a name and a 24-byte union.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        let mut r = IfReq::default();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name `{name}`"),
            ));
        }
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }
    fn set_i16(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }
    fn i16(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }
    fn set_i32(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }
    fn i32(&self) -> i32 {
        i32::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
}

fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: every caller passes a request whose argument is `arg`'s type.
    if unsafe { libc::ioctl(fd, req as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A socket for interface ioctls.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn if_ioctl(name: &str, req: libc::c_ulong, f: impl FnOnce(&mut IfReq)) -> io::Result<IfReq> {
    let s = ctl_socket()?;
    let mut r = IfReq::new(name)?;
    f(&mut r);
    ioctl(s.as_raw_fd(), req, &mut r as *mut IfReq as *mut _)?;
    Ok(r)
}

pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Create (or attach to) tap `name` with virtio-net headers.
    pub fn open(name: &str) -> io::Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut r = IfReq::new(name)?;
        r.set_i16(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        ioctl(file.as_raw_fd(), TUNSETIFF, &mut r as *mut IfReq as *mut _)?;
        let end = r.name.iter().position(|&b| b == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&r.name[..end]).into_owned();
        Ok(Tap { file, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Set the link's MAC (Xen gives the host end fe:ff:ff:ff:ff:ff so a
    /// bridge never takes it as its own address).
    pub fn set_mac(&self, mac: [u8; 6]) -> io::Result<()> {
        if_ioctl(&self.name, SIOCSIFHWADDR, |r| {
            r.data[..2].copy_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
            r.data[2..8].copy_from_slice(&mac);
        })
        .map(drop)
    }

    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        if_ioctl(&self.name, SIOCSIFMTU, |r| r.set_i32(mtu as i32)).map(drop)
    }

    /// Bring the link up; a link already up is left alone (so that a
    /// tap pre-created and brought up by root serves an unprivileged
    /// monitor, which may not set interface flags).
    pub fn up(&self) -> io::Result<()> {
        let flags = if_ioctl(&self.name, SIOCGIFFLAGS, |_| {})?.i16();
        if flags & IFF_UP != 0 {
            return Ok(());
        }
        if_ioctl(&self.name, SIOCSIFFLAGS, |r| r.set_i16(flags | IFF_UP)).map(drop)
    }

    /// Add the tap to `bridge` (SIOCBRADDIF), unless it is in it already
    /// (pre-created for an unprivileged monitor: `ip link set NAME master BR`).
    pub fn attach(&self, bridge: &str) -> io::Result<()> {
        if master_of(std::path::Path::new("/sys/class/net"), &self.name).as_deref() == Some(bridge)
        {
            return Ok(());
        }
        let index = if_ioctl(&self.name, SIOCGIFINDEX, |_| {})?.i32();
        if_ioctl(bridge, SIOCBRADDIF, |r| r.set_i32(index)).map(drop)
    }
}

impl Link for Tap {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: writes from a valid slice.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let fd = self.file.as_raw_fd();
        loop {
            // SAFETY: reads into a valid mutable slice.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => {}
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
            if timeout.is_zero() {
                return Ok(None);
            }
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r == 0 {
                return Ok(None);
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(io::Error::last_os_error());
            }
            if r > 0 && p.revents & libc::POLLIN == 0 {
                return Ok(None);
            }
        }
    }

    fn set_offload(&self, flags: u32) -> io::Result<()> {
        // TUNSETOFFLOAD takes the flags by value.
        // SAFETY: the request takes an unsigned long argument.
        if unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The bridge (or other master) that link `name` belongs to, from
/// `<sys_net>/<name>/master`.
fn master_of(sys_net: &std::path::Path, name: &str) -> Option<String> {
    let target = std::fs::read_link(sys_net.join(name).join("master")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The default host-side name, as Xen's hotplug names it.
pub fn default_name(domid: u32, devid: u32) -> String {
    format!("vif{domid}.{devid}")
}

#[cfg(test)]
mod master_tests {
    #[test]
    fn master_is_read_from_sysfs_links() {
        let dir = std::env::temp_dir().join(format!("xenkvm-master-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("vif1.0")).unwrap();
        std::fs::create_dir_all(dir.join("vif2.0")).unwrap();
        std::os::unix::fs::symlink("../../../virtual/net/xenbr0", dir.join("vif1.0/master"))
            .unwrap();
        assert_eq!(super::master_of(&dir, "vif1.0").as_deref(), Some("xenbr0"));
        assert_eq!(super::master_of(&dir, "vif2.0"), None);
        assert_eq!(super::master_of(&dir, "vif3.0"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
