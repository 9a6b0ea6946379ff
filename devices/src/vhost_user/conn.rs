//! The vhost-user-blk handshake (rust-vmm's `vhost` frontend): features,
//! the device's config space, the memory table (guest RAM and the shadow
//! region) and one virtqueue.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use vmm_sys_util::eventfd::EventFd;

use super::shadow::{Shadow, SHADOW_GPA};
use super::vring::VringLayout;
use super::{SharedRam, VhostError};

/// A backend message gets this long for its answer (a hung backend must
/// not hang the device thread for ever).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the backend's device offers, from its features and config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkInfo {
    /// 512-byte sectors.
    pub capacity: u64,
    pub read_only: bool,
    pub flush: bool,
    /// Most sectors one discard request may cover; None: no discard.
    pub max_discard_sectors: Option<u32>,
    /// Most data descriptors per request (`seg_max`), if the device says.
    pub seg_max: Option<u32>,
    /// Queues the device has (`num_queues` with VIRTIO_BLK_F_MQ, else 1).
    pub num_queues: u16,
}

/// Queues asked of a backend at most (as the in-process backend offers).
pub const MAX_QUEUES: u16 = 4;

fn bit(f: u32) -> u64 {
    1u64 << f
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Read `struct virtio_blk_config` (the first 60 bytes) for `features`.
pub fn parse_config(cfg: &[u8; 60], features: u64) -> BlkInfo {
    let mut cap = [0u8; 8];
    cap.copy_from_slice(&cfg[..8]);
    let max_discard = le32(cfg, 36);
    BlkInfo {
        capacity: u64::from_le_bytes(cap),
        read_only: features & bit(VIRTIO_BLK_F_RO) != 0,
        flush: features & bit(VIRTIO_BLK_F_FLUSH) != 0,
        max_discard_sectors: (features & bit(VIRTIO_BLK_F_DISCARD) != 0 && max_discard > 0)
            .then_some(max_discard),
        seg_max: (features & bit(VIRTIO_BLK_F_SEG_MAX) != 0).then(|| le32(cfg, 12)),
        num_queues: if features & bit(VIRTIO_BLK_F_MQ) != 0 {
            u16::from_le_bytes([cfg[34], cfg[35]]).clamp(1, MAX_QUEUES)
        } else {
            1
        },
    }
}

fn step(what: &'static str) -> impl Fn(vhost::Error) -> VhostError {
    move |e| VhostError::Protocol(what, e.to_string())
}

/// Connect to the backend at `path`: features and the device's config.
pub fn open(path: &Path) -> Result<(Frontend, BlkInfo), VhostError> {
    let sock = UnixStream::connect(path).map_err(VhostError::Connect)?;
    let _ = sock.set_read_timeout(Some(REPLY_TIMEOUT));
    let _ = sock.set_write_timeout(Some(REPLY_TIMEOUT));
    let mut fe = Frontend::from_stream(sock, u64::from(MAX_QUEUES));
    fe.set_owner().map_err(step("SET_OWNER"))?;
    let offered = fe.get_features().map_err(step("GET_FEATURES"))?;
    let proto = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    for (need, name) in [
        (proto, "PROTOCOL_FEATURES"),
        (bit(VIRTIO_RING_F_INDIRECT_DESC), "RING_F_INDIRECT_DESC"),
    ] {
        if offered & need == 0 {
            return Err(VhostError::Missing(name));
        }
    }
    let pf = fe
        .get_protocol_features()
        .map_err(step("GET_PROTOCOL_FEATURES"))?;
    if !pf.contains(VhostUserProtocolFeatures::CONFIG) {
        return Err(VhostError::Missing("PROTOCOL_F_CONFIG"));
    }
    fe.set_protocol_features(VhostUserProtocolFeatures::CONFIG)
        .map_err(step("SET_PROTOCOL_FEATURES"))?;
    let wanted = proto
        | bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_BLK_F_RO)
        | bit(VIRTIO_BLK_F_FLUSH)
        | bit(VIRTIO_BLK_F_DISCARD)
        | bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_MQ)
        | bit(VIRTIO_BLK_F_BLK_SIZE);
    let features = offered & wanted;
    let (_, payload) = fe
        .get_config(0, 60, VhostUserConfigFlags::empty(), &[0u8; 60])
        .map_err(step("GET_CONFIG"))?;
    let cfg: [u8; 60] = payload
        .as_slice()
        .try_into()
        .map_err(|_| VhostError::Protocol("GET_CONFIG", "short config".into()))?;
    let info = parse_config(&cfg, features);
    fe.set_features(features).map_err(step("SET_FEATURES"))?;
    Ok((fe, info))
}

/// Give the backend the memory table: guest RAM at 0 if there is one, the
/// shadow region at [`SHADOW_GPA`].
pub fn set_mem_table(
    fe: &mut Frontend,
    ram: Option<&SharedRam>,
    shadow: &Shadow,
) -> Result<(), VhostError> {
    let mut regions = vec![VhostUserMemoryRegionInfo {
        guest_phys_addr: SHADOW_GPA,
        memory_size: shadow.len() as u64,
        userspace_addr: shadow.host_addr(),
        mmap_offset: 0,
        mmap_handle: shadow.fd(),
    }];
    if let Some(ram) = ram {
        regions.insert(
            0,
            VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: ram.size,
                userspace_addr: ram.host_addr,
                mmap_offset: 0,
                mmap_handle: std::os::fd::AsRawFd::as_raw_fd(&*ram.file),
            },
        );
    }
    fe.set_mem_table(&regions).map_err(step("SET_MEM_TABLE"))?;
    Ok(())
}

/// Start queue `q` at `layout` in `shadow`.
pub fn start_queue(
    fe: &mut Frontend,
    q: usize,
    shadow: &Shadow,
    layout: VringLayout,
    kick: &EventFd,
    call: &EventFd,
) -> Result<(), VhostError> {
    let base = shadow.host_addr();
    fe.set_vring_num(q, layout.size)
        .map_err(step("SET_VRING_NUM"))?;
    fe.set_vring_base(q, 0).map_err(step("SET_VRING_BASE"))?;
    fe.set_vring_addr(
        q,
        &VringConfigData {
            queue_max_size: layout.size,
            queue_size: layout.size,
            flags: 0,
            desc_table_addr: base + layout.desc as u64,
            used_ring_addr: base + layout.used as u64,
            avail_ring_addr: base + layout.avail as u64,
            log_addr: None,
        },
    )
    .map_err(step("SET_VRING_ADDR"))?;
    fe.set_vring_call(q, call).map_err(step("SET_VRING_CALL"))?;
    fe.set_vring_kick(q, kick).map_err(step("SET_VRING_KICK"))?;
    fe.set_vring_enable(q, true)
        .map_err(step("SET_VRING_ENABLE"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_fields() {
        let mut c = [0u8; 60];
        c[..8].copy_from_slice(&2048u64.to_le_bytes());
        c[12..16].copy_from_slice(&126u32.to_le_bytes());
        c[36..40].copy_from_slice(&32768u32.to_le_bytes());
        let all = bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_SEG_MAX);
        assert_eq!(
            parse_config(&c, all),
            BlkInfo {
                capacity: 2048,
                read_only: false,
                flush: true,
                max_discard_sectors: Some(32768),
                seg_max: Some(126),
                num_queues: 1,
            }
        );
        c[34..36].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(
            parse_config(&c, bit(VIRTIO_BLK_F_MQ)).num_queues,
            MAX_QUEUES
        );
        c[34..36].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(parse_config(&c, bit(VIRTIO_BLK_F_MQ)).num_queues, 2);
        assert_eq!(parse_config(&c, 0).num_queues, 1);
        let ro = parse_config(&c, bit(VIRTIO_BLK_F_RO));
        assert!(ro.read_only && !ro.flush);
        assert_eq!((ro.max_discard_sectors, ro.seg_max), (None, None));
    }
}
