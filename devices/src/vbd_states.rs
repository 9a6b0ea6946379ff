//! blkback's `frontend_changed`: the xenbus state machine every PV disk
//! backend follows (the in-process one, crate::blkback, and the vhost-user
//! bridge, crate::vhost_user), whatever serves its requests.

use crate::xenbus::{State, XenbusDev};

/// What a disk backend does at each step of the handshake.
pub trait DiskBackend {
    fn xenbus(&self) -> &XenbusDev;
    /// For log lines, e.g. `vbd xvda`.
    fn label(&self) -> String;
    /// The rings are mapped and served.
    fn has_rings(&self) -> bool;
    /// Map the frontend's rings and bind their event channels.
    fn connect_rings(&mut self) -> Result<(), String>;
    /// Stop serving and unmap the rings.
    fn drop_rings(&mut self);
    /// Write the backend's features and go to InitWait (again).
    fn offer(&self);
}

/// One step after the frontend's or the backend's state changed.
pub fn step(d: &mut impl DiskBackend) {
    let be = d.xenbus().backend_state();
    match d.xenbus().frontend_state() {
        State::Initialised | State::Connected if !d.has_rings() => {
            if be == State::Closed || be == State::Closing {
                return;
            }
            match d.connect_rings() {
                Ok(()) => {
                    let _ = d.xenbus().switch_state(State::Connected);
                }
                Err(why) => {
                    log::warn!("{}: cannot connect: {why}", d.label());
                    d.drop_rings();
                    let _ = d.xenbus().write_be(&[("hotplug-error", why.clone())]);
                    let _ = d.xenbus().switch_state(State::Closing);
                }
            }
        }
        // As Linux's blkback: the rings stay until the frontend is Closed
        // (older blkfronts sit in Closing while the disk is in use, and keep
        // using it).
        State::Closing if be != State::Closing && be != State::Closed => {
            let _ = d.xenbus().switch_state(State::Closing);
        }
        State::Closed | State::Unknown => {
            d.drop_rings();
            if be != State::Closed && be != State::InitWait {
                let _ = d.xenbus().switch_state(State::Closed);
            }
        }
        State::Initialising | State::InitWait if be == State::Closed => {
            // A new frontend (a boot loader's successor): offer again.
            d.offer();
        }
        _ => {}
    }
}

/// blkif's discard keys (granularity one page, no alignment offset).
pub fn discard_keys() -> [(&'static str, String); 4] {
    [
        ("feature-discard", "1".into()),
        ("discard-granularity", "4096".into()),
        ("discard-alignment", "0".into()),
        ("discard-secure", "0".into()),
    ]
}
