//! The control surface: xl.cfg parsing, the xenstore unix socket for the
//! standard Xen tools, and (later) the REST API.

pub mod xlcfg;
pub mod xs_socket;
