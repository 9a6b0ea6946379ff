//! Emulated devices and the Xen PV backends (block, network), each on the
//! shared ring helpers in [`ring`]; disk images and the host-side PV boot
//! loader (what pygrub does) live here too, and the bridge that serves a
//! PV disk from a vhost-user backend ([`vhost_user`]).

pub mod blkback;
pub mod disk;
pub mod netback;
pub mod notify;
pub mod pygrub;
pub mod ring;
pub mod vbd_states;
pub mod vhost_user;
pub mod xenbus;
