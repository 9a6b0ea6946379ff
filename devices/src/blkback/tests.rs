//! A hostile (and a well-behaved) frontend against the block backend,
//! without KVM: a test domain, its grant table, a ring and a disk in memory.

use std::sync::{Arc, Mutex};

use xen_shim::domain::Domain;
use xen_shim::testing::{grant, test_domain};

use super::io::Disk;
use super::proto::*;
use super::queue::drain;
use crate::disk::{DiskError, DiskImage};
use crate::ring::{BackRing, GrantedPages};
use crate::xenbus::BackendCtx;

struct MemDisk(Mutex<Vec<u8>>);

impl DiskImage for MemDisk {
    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let d = self.0.lock().unwrap();
        let o = offset as usize;
        buf.copy_from_slice(&d[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let mut d = self.0.lock().unwrap();
        let o = offset as usize;
        d[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard_supported(&self) -> bool {
        false
    }
    fn format(&self) -> &'static str {
        "mem"
    }
}

/// Frame 30 is the ring (gref 1); frames 40.. are data pages (gref 10..).
const RING: u64 = 30 << 12;

struct Rig {
    dom: Arc<Domain>,
    ctx: BackendCtx,
    ring: BackRing,
    disk: Disk,
    image: Arc<MemDisk>,
    prod: u32,
}

fn rig(read_only: bool) -> Rig {
    let (dom, _) = test_domain(128);
    grant(&dom, 1, 0, 30, false);
    for i in 0..20 {
        grant(&dom, 10 + i, 0, 40 + i, false);
    }
    let ring = BackRing::new(GrantedPages::map(&dom, &[1]).unwrap(), ENTRY);
    let image = Arc::new(MemDisk(Mutex::new(vec![0u8; 1 << 20])));
    let ctx = BackendCtx {
        dom: dom.clone(),
        store: Arc::new(Mutex::new(xen_shim::xenstore::Store::new())),
        backends: Default::default(),
        shared_ram: None,
    };
    let disk = Disk {
        image: image.clone(),
        read_only,
        sectors: 2048,
    };
    Rig {
        dom,
        ctx,
        ring,
        disk,
        image,
        prod: 0,
    }
}

impl Rig {
    /// Queue one request and let the backend answer; returns (id, op, status).
    fn submit(&mut self, req: &[u8; ENTRY]) -> (u64, u8, i16) {
        let slot = RING + 64 + u64::from(self.prod % 32) * ENTRY as u64;
        self.dom.mem.write(slot, req).unwrap();
        self.prod += 1;
        self.dom.mem.write_u32(RING, self.prod).unwrap();
        let mut buf = Vec::new();
        drain(&self.ctx, &mut self.ring, 5, &self.disk, &mut buf);
        assert_eq!(
            self.dom.mem.read_u32(RING + 8).unwrap(),
            self.prod,
            "one response"
        );
        let mut r = [0u8; 16];
        self.dom.mem.read(slot, &mut r).unwrap();
        (
            u64::from_le_bytes(r[..8].try_into().unwrap()),
            r[8],
            i16::from_le_bytes([r[10], r[11]]),
        )
    }
}

fn req(op: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> [u8; ENTRY] {
    let mut b = [0u8; ENTRY];
    b[0] = op;
    b[1] = segs.len() as u8;
    b[8..16].copy_from_slice(&id.to_le_bytes());
    b[16..24].copy_from_slice(&sector.to_le_bytes());
    for (i, (g, f, l)) in segs.iter().enumerate() {
        b[24 + i * 8..28 + i * 8].copy_from_slice(&g.to_le_bytes());
        b[28 + i * 8] = *f;
        b[29 + i * 8] = *l;
    }
    b
}

#[test]
fn write_then_read_back() {
    let mut r = rig(false);
    r.dom.mem.write(40 << 12, &[0xaa; 4096]).unwrap();
    r.dom.mem.write(41 << 12, &[0xbb; 4096]).unwrap();
    // 8 sectors of page 40 and sectors 2..=3 of page 41, at sector 16.
    assert_eq!(
        r.submit(&req(OP_WRITE, 7, 16, &[(10, 0, 7), (11, 2, 3)])),
        (7, OP_WRITE, RSP_OKAY)
    );
    {
        let d = r.image.0.lock().unwrap();
        assert!(d[16 * 512..24 * 512].iter().all(|&b| b == 0xaa));
        assert!(d[24 * 512..26 * 512].iter().all(|&b| b == 0xbb));
        assert_eq!(d[26 * 512], 0);
    }
    assert_eq!(
        r.submit(&req(OP_READ, 8, 20, &[(12, 1, 6)])),
        (8, OP_READ, RSP_OKAY)
    );
    let mut page = [0u8; 4096];
    r.dom.mem.read(42 << 12, &mut page).unwrap();
    assert!(page[..512].iter().all(|&b| b == 0));
    assert!(page[512..2560].iter().all(|&b| b == 0xaa));
    assert!(page[2560..3584].iter().all(|&b| b == 0xbb));
    assert!(page[3584..].iter().all(|&b| b == 0));
    assert_eq!(r.submit(&req(OP_FLUSH_DISKCACHE, 9, 0, &[])).2, RSP_OKAY);
    // All grants were released again.
    assert_eq!(
        r.dom.grants.lock().unwrap().len(),
        1,
        "only the ring stays mapped"
    );
}

#[test]
fn indirect_read() {
    let mut r = rig(false);
    r.image.0.lock().unwrap()[..4096 * 3].fill(0x5a);
    // Indirect page = frame 45 (gref 15) listing 3 segments (grefs 10..12).
    for i in 0..3u64 {
        let e = (45 << 12) | (i * 8);
        r.dom.mem.write_u32(e, 10 + i as u32).unwrap();
        r.dom.mem.write_u8(e + 4, 0).unwrap();
        r.dom.mem.write_u8(e + 5, 7).unwrap();
    }
    let mut b = req(OP_INDIRECT, 3, 0, &[]);
    b[1] = OP_READ;
    b[2..4].copy_from_slice(&3u16.to_le_bytes());
    b[28..32].copy_from_slice(&15u32.to_le_bytes());
    assert_eq!(r.submit(&b), (3, OP_READ, RSP_OKAY));
    assert_eq!(
        r.dom.mem.read_u64((42 << 12) + 4088).unwrap(),
        0x5a5a5a5a5a5a5a5a
    );
}

#[test]
fn hostile_requests_get_errors_and_touch_nothing() {
    let mut r = rig(false);
    r.dom.mem.write(40 << 12, &[0xcc; 4096]).unwrap();
    let cases: Vec<([u8; ENTRY], i16)> = vec![
        // Unknown grant, grant beyond the table, grant to a frame outside RAM.
        (req(OP_WRITE, 1, 0, &[(3, 0, 7)]), RSP_ERROR),
        (req(OP_WRITE, 1, 0, &[(u32::MAX, 0, 7)]), RSP_ERROR),
        // Sectors outside the page, reversed.
        (req(OP_WRITE, 1, 0, &[(10, 0, 8)]), RSP_ERROR),
        (req(OP_WRITE, 1, 0, &[(10, 5, 4)]), RSP_ERROR),
        // Beyond the end of the disk, and wrapping around u64.
        (req(OP_WRITE, 1, 2047, &[(10, 0, 7)]), RSP_ERROR),
        (req(OP_WRITE, 1, u64::MAX - 2, &[(10, 0, 7)]), RSP_ERROR),
        // Too many segments; unknown operation.
        (
            {
                let mut b = req(OP_WRITE, 1, 0, &[(10, 0, 7)]);
                b[1] = 200;
                b
            },
            RSP_ERROR,
        ),
        (req(42, 1, 0, &[]), RSP_EOPNOTSUPP),
        // Discard is not offered by this disk.
        (req(OP_DISCARD, 1, 0, &[]), RSP_EOPNOTSUPP),
    ];
    grant(&r.dom, 3, 0, 127 + 100, false);
    for (b, want) in cases {
        assert_eq!(r.submit(&b).2, want, "request {:?}", &b[..32]);
    }
    assert!(
        r.image.0.lock().unwrap().iter().all(|&b| b == 0),
        "disk untouched"
    );
    // A read into a page granted read-only must not write it.
    grant(&r.dom, 10, 0, 40, true);
    assert_eq!(r.submit(&req(OP_READ, 1, 0, &[(10, 0, 7)])).2, RSP_ERROR);
    assert_eq!(r.dom.mem.read_u8(40 << 12).unwrap(), 0xcc);
    // Indirect page that is not granted.
    let mut b = req(OP_INDIRECT, 1, 0, &[]);
    b[1] = OP_READ;
    b[2..4].copy_from_slice(&1u16.to_le_bytes());
    b[28..32].copy_from_slice(&99u32.to_le_bytes());
    assert_eq!(r.submit(&b).2, RSP_ERROR);
    assert_eq!(
        r.dom.grants.lock().unwrap().len(),
        1,
        "no grant left mapped"
    );
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut r = rig(true);
    r.dom.mem.write(40 << 12, &[0xcc; 4096]).unwrap();
    assert_eq!(r.submit(&req(OP_WRITE, 1, 0, &[(10, 0, 7)])).2, RSP_ERROR);
    assert_eq!(r.submit(&req(OP_READ, 2, 0, &[(10, 0, 7)])).2, RSP_OKAY);
    assert!(r.image.0.lock().unwrap().iter().all(|&b| b == 0));
}

#[test]
fn garbage_ring_indices_stop_the_ring() {
    let mut r = rig(false);
    r.dom.mem.write_u32(RING, 0xdead_beef).unwrap();
    let mut buf = Vec::new();
    drain(&r.ctx, &mut r.ring, 5, &r.disk, &mut buf);
    assert!(r.ring.broken().is_some());
    assert_eq!(r.dom.mem.read_u32(RING + 8).unwrap(), 0, "no responses");
}

/// The frontend's side of the handshake, played through xenstore.
mod handshake {
    use super::*;
    use crate::blkback::{spawn, VbdConfig};
    use std::time::{Duration, Instant};
    use xen_shim::evtchn::PortState;
    use xen_shim::xenstore::{populate_dom0, populate_domain, Store};

    const FE: &str = "/local/domain/1/device/vbd/51712";
    const BE: &str = "/local/domain/0/backend/vbd/1/51712";

    fn read(ctx: &BackendCtx, path: &str) -> Option<String> {
        ctx.store.lock().unwrap().read_string(path).ok()
    }

    fn write(ctx: &BackendCtx, path: &str, v: &str) {
        ctx.store.lock().unwrap().write(path, v).unwrap();
    }

    fn wait_state(ctx: &BackendCtx, want: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if read(ctx, &format!("{BE}/state")).as_deref() == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "backend state {:?}, wanted {want}",
            read(ctx, &format!("{BE}/state"))
        );
    }

    #[test]
    fn connect_close_and_connect_a_second_frontend() {
        let (dom, _) = test_domain(128);
        grant(&dom, 10, 0, 40, true);
        let mut s = Store::new();
        populate_dom0(&mut s).unwrap();
        populate_domain(&mut s, 1, "g", 512 << 10, 1).unwrap();
        let ctx = BackendCtx {
            dom: dom.clone(),
            store: Arc::new(Mutex::new(s)),
            backends: Default::default(),
            shared_ram: None,
        };
        let image = Arc::new(MemDisk(Mutex::new(vec![0u8; 1 << 20])));
        let vbd = spawn(
            &ctx,
            1,
            VbdConfig {
                vdev: "xvda".into(),
                image: image.clone(),
                read_only: false,
                cdrom: false,
                params: "mem".into(),
                max_queues: 1,
                domain_name: "g".into(),
            },
        )
        .unwrap();
        assert_eq!(vbd.devid, 51712);
        wait_state(&ctx, "2");
        assert_eq!(
            read(&ctx, &format!("{FE}/virtual-device")).as_deref(),
            Some("51712")
        );
        assert_eq!(
            read(&ctx, &format!("{BE}/feature-flush-cache")).as_deref(),
            Some("1")
        );
        assert_eq!(
            read(&ctx, &format!("{BE}/feature-max-indirect-segments")).as_deref(),
            Some("256")
        );
        for round in 0..2u32 {
            // A fresh frontend: new ring page, new grant, new event channel.
            let (gref, frame) = (1 + round, 30 + u64::from(round));
            grant(&dom, gref, 0, frame as u32, false);
            dom.mem.write(frame << 12, &[0u8; 4096]).unwrap();
            let port = dom.evtchn.lock().unwrap().alloc_unbound(0).unwrap();
            write(&ctx, &format!("{FE}/ring-ref"), &gref.to_string());
            write(&ctx, &format!("{FE}/event-channel"), &port.to_string());
            write(&ctx, &format!("{FE}/protocol"), "x86_64-abi");
            write(&ctx, &format!("{FE}/state"), "3");
            wait_state(&ctx, "4");
            assert_eq!(
                read(&ctx, &format!("{BE}/sectors")).as_deref(),
                Some("2048")
            );
            // One write through the ring, then the notification.
            dom.mem.write(40 << 12, &[round as u8 + 1; 4096]).unwrap();
            let r = req(OP_WRITE, 99, 8 * u64::from(round), &[(10, 0, 7)]);
            dom.mem.write((frame << 12) + 64, &r).unwrap();
            dom.mem.write_u32(frame << 12, 1).unwrap();
            let PortState::Interdomain { backend } = dom.evtchn.lock().unwrap().state(port) else {
                panic!("port {port} not bound to the backend");
            };
            ctx.backends.notify(backend);
            let t = Instant::now();
            while dom.mem.read_u32((frame << 12) + 8).unwrap() != 1 {
                assert!(t.elapsed() < Duration::from_secs(10), "no response");
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(dom.mem.read_u16((frame << 12) + 64 + 10).unwrap(), 0);
            let off = 4096 * round as usize;
            assert!(image.0.lock().unwrap()[off..off + 4096]
                .iter()
                .all(|&b| b == round as u8 + 1));
            // The frontend closes; the backend follows, releases everything
            // and offers the device again to the next frontend.
            write(&ctx, &format!("{FE}/state"), "5");
            wait_state(&ctx, "5");
            write(&ctx, &format!("{FE}/state"), "6");
            wait_state(&ctx, "6");
            assert_eq!(
                dom.evtchn.lock().unwrap().state(port),
                PortState::Unbound { remote: 0 }
            );
            assert!(dom.grants.lock().unwrap().is_empty(), "ring still mapped");
            write(&ctx, &format!("{FE}/state"), "1");
            wait_state(&ctx, "2");
        }
        drop(vbd);
    }

    /// GRUB's PV disk driver (grub_xendisk_fini) before it boots a kernel: from
    /// Connected straight to Closed (no Closing), waits for the backend's Closed,
    /// empties ring-ref and event-channel and closes its port; the kernel's
    /// blkfront then starts at Initialising and must get the disk again.
    #[test]
    fn a_boot_loader_closes_without_closing_and_the_kernel_reconnects() {
        let (dom, _) = test_domain(128);
        let mut s = Store::new();
        populate_dom0(&mut s).unwrap();
        populate_domain(&mut s, 1, "g", 512 << 10, 1).unwrap();
        let ctx = BackendCtx {
            dom: dom.clone(),
            store: Arc::new(Mutex::new(s)),
            backends: Default::default(),
            shared_ram: None,
        };
        let image = Arc::new(MemDisk(Mutex::new(vec![0u8; 1 << 20])));
        let config = VbdConfig {
            vdev: "xvda".into(),
            image,
            read_only: false,
            cdrom: false,
            params: "mem".into(),
            max_queues: 1,
            domain_name: "g".into(),
        };
        let vbd = spawn(&ctx, 1, config).unwrap();
        wait_state(&ctx, "2");
        let connect = |gref: u32, frame: u64| {
            grant(&dom, gref, 0, frame as u32, false);
            dom.mem.write(frame << 12, &[0u8; 4096]).unwrap();
            let port = dom.evtchn.lock().unwrap().alloc_unbound(0).unwrap();
            write(&ctx, &format!("{FE}/ring-ref"), &gref.to_string());
            write(&ctx, &format!("{FE}/event-channel"), &port.to_string());
            write(&ctx, &format!("{FE}/protocol"), "x86_64-abi");
            write(&ctx, &format!("{FE}/state"), "3");
            wait_state(&ctx, "4");
            port
        };
        // GRUB's frontend.
        let port = connect(1, 30);
        write(&ctx, &format!("{FE}/state"), "6");
        wait_state(&ctx, "6");
        assert!(dom.grants.lock().unwrap().is_empty(), "ring still mapped");
        write(&ctx, &format!("{FE}/ring-ref"), "");
        write(&ctx, &format!("{FE}/event-channel"), "");
        dom.evtchn.lock().unwrap().close(port).unwrap();
        // The kernel's blkfront, on a new ring and port.
        write(&ctx, &format!("{FE}/state"), "1");
        wait_state(&ctx, "2");
        let port = connect(2, 31);
        assert!(matches!(
            dom.evtchn.lock().unwrap().state(port),
            PortState::Interdomain { .. }
        ));
        drop(vbd);
    }
}
