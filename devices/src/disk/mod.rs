//! Disk images (raw, qcow2) behind one synchronous interface.
