//! The xenstore unix-socket front door (xs_wire protocol) for Xen's tools.

use std::path::Path;

/// Errors of the socket front door.
#[derive(Debug, thiserror::Error)]
pub enum XsSocketError {
    #[error("xenstore socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Serve a fresh store on `socket` until killed (`xenkvm xenstored`).
pub fn run_standalone(socket: &Path) -> Result<(), XsSocketError> {
    Err(XsSocketError::Io {
        path: socket.display().to_string(),
        source: std::io::Error::other("not implemented yet"),
    })
}
