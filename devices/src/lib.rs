//! Emulated devices and the Xen PV backends (block, network), each on the
//! shared ring helpers in [`ring`]; disk images and the host-side PV boot
//! loader (what pygrub does) live here too.

pub mod blkback;
pub mod disk;
pub mod netback;
pub mod notify;
pub mod pygrub;
pub mod ring;
pub mod xenbus;
