//! The PV block backend (vbd).
