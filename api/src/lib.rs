//! The control surface: xl.cfg parsing, the xenstore unix socket for the
//! standard Xen tools, and the REST control API.

pub mod control;
pub mod xlcfg;
pub mod xs_socket;
