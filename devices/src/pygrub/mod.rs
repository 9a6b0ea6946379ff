//! Host-side PV boot loader: what pygrub does.
