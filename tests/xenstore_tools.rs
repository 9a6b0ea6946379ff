//! Debian xenstore-utils against the xenkvm store.
