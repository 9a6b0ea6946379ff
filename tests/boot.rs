//! Integration tests that boot real guests.
