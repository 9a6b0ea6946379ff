//! Per-domain quotas and the accounting that enforces them.
//!
//! Quotas bind unprivileged domains (guests) only, as in C xenstored; the
//! toolstack side (domain 0, socket clients, the monitor itself) is trusted.
//! The defaults equal xenstored's (`-Q` names in brackets).

use super::wire::{PAYLOAD_MAX, REL_PATH_MAX};

/// Limits applied to every unprivileged domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes owned by the domain [nodes] → ENOSPC.
    pub nodes: usize,
    /// Size of one node: value + children names + 4 bytes per permission
    /// [node-size] → ENOSPC.
    pub node_size: usize,
    /// Watches [watches] → E2BIG.
    pub watches: usize,
    /// Open transactions [transactions] → ENOSPC.
    pub transactions: usize,
    /// Nodes one transaction may touch [transaction-nodes] → ENOSPC.
    pub transaction_nodes: usize,
    /// Replies not yet taken by the guest before its requests are no longer
    /// read [outstanding].
    pub outstanding: usize,
    /// Bytes of store memory charged to the domain: its nodes, its open
    /// transactions and its watches [memory] → ENOMEM.
    pub memory: usize,
    /// Entries of a permission list [node-permissions] → ENOSPC.
    pub perms_per_node: usize,
    /// Path length below `/local/domain/<id>/` [path-max] → EINVAL.
    pub path_max: usize,
    /// Watch events queued for one guest connection; more are dropped.
    pub queued_events: usize,
    /// Watch events queued for one privileged connection; more are dropped.
    pub queued_events_privileged: usize,
    /// Message payload size; anything larger breaks the connection. Never
    /// above [`PAYLOAD_MAX`].
    pub payload_max: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            nodes: 1000,
            node_size: 2048,
            watches: 128,
            transactions: 10,
            transaction_nodes: 1024,
            outstanding: 20,
            memory: 2 * 1024 * 1024 + 512 * 1024,
            perms_per_node: 5,
            path_max: REL_PATH_MAX,
            queued_events: 256,
            queued_events_privileged: 4096,
            payload_max: PAYLOAD_MAX,
        }
    }
}

/// What one domain uses of the store right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainUsage {
    pub nodes: usize,
    pub node_bytes: usize,
    pub watches: usize,
    pub watch_bytes: usize,
    pub transactions: usize,
    pub transaction_bytes: usize,
}

impl DomainUsage {
    /// Bytes charged against [`Quotas::memory`].
    pub fn memory(&self) -> usize {
        self.node_bytes
            .saturating_add(self.watch_bytes)
            .saturating_add(self.transaction_bytes)
    }
}

/// Fixed per-object overhead charged on top of the variable bytes.
pub(crate) const OBJ_OVERHEAD: usize = 64;

/// Bytes charged for a node stored at `path`.
pub(crate) fn node_cost(path: &str, value_len: usize, nperms: usize) -> usize {
    OBJ_OVERHEAD
        .saturating_add(path.len())
        .saturating_add(value_len)
        .saturating_add(nperms.saturating_mul(8))
}

/// Bytes charged for a watch.
pub(crate) fn watch_cost(path: &str, token: &str) -> usize {
    OBJ_OVERHEAD
        .saturating_add(path.len().saturating_mul(2))
        .saturating_add(token.len())
}
