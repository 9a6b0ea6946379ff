//! Kernel loading for PV guests.
