//! Shared-ring helpers for every backend.
