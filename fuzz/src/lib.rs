//! Fuzz targets for the code that reads guest- or user-controlled input.
//! Each function takes arbitrary bytes and must return without panicking;
//! `fuzz_targets/*.rs` hand them to libFuzzer (see scripts/fuzz).

use std::sync::Arc;

use devices::disk::{DiskError, DiskImage};
use xen_shim::mem::{GuestMem, VecMem};
use xen_shim::vcpu::PvVcpu;
use xen_shim::xenstore::ring::GuestRing;
use xen_shim::xenstore::store::Store;
use xen_shim::xenstore::wire::FrameDecoder;

/// Guest frames of the hypercall target's domain.
const HC_PAGES: u64 = 64;
/// Where the hypercall target copies its guest data: frames 16.. (mapped
/// at the same virtual address by `map_low_memory`).
const HC_DATA: u64 = 0x10000;
const HC_DATA_LEN: usize = 0x8000;
/// Bytes of one hypercall record: number, pointer mask, six arguments.
const HC_RECORD: usize = 2 + 6 * 8;

/// Hypercalls on a one-vCPU test domain (`xen_shim::testing`): the input
/// is a length byte, that many 256-byte blocks of guest data, then
/// records of (number, which arguments point into the data, arguments).
pub fn hypercall(data: &[u8]) {
    let (dom, _platform) = xen_shim::testing::test_domain(HC_PAGES);
    let mut v = PvVcpu::new(0, dom.clone());
    v.root_kernel = xen_shim::testing::map_low_memory(&dom);
    let Some((&blocks, rest)) = data.split_first() else {
        return;
    };
    let n = (usize::from(blocks) * 256).min(rest.len()).min(HC_DATA_LEN);
    let (guest, calls) = rest.split_at(n);
    if dom.mem.write(HC_DATA, guest).is_err() {
        return;
    }
    for rec in calls.chunks_exact(HC_RECORD).take(32) {
        let nr = u64::from(rec[0] % 64);
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[2 + i * 8..10 + i * 8]);
            let raw = u64::from_le_bytes(b);
            // A pointer argument lands in the guest data.
            *a = if rec[1] & (1 << i) != 0 {
                HC_DATA + raw % HC_DATA_LEN as u64
            } else {
                raw
            };
        }
        let _ = xen_shim::hypercall::dispatch(&mut v, nr, args, false);
        v.pt_log.clear();
    }
}

/// A xenstore socket client's byte stream (`api::xs_socket` framing and
/// the store's request handling); the first byte picks a privileged
/// (dom0) or guest connection.
pub fn xenstore_wire(data: &[u8]) {
    let Some((&who, mut stream)) = data.split_first() else {
        return;
    };
    let mut store = new_store();
    let conn = if who & 1 == 0 {
        store.connect(0, true)
    } else {
        store.connect(1, false)
    };
    let mut dec = FrameDecoder::new();
    while !stream.is_empty() {
        let Ok((taken, msg)) = dec.push(stream) else {
            return;
        };
        stream = &stream[taken..];
        match msg {
            Some((hdr, payload)) => {
                store.handle_message(conn, &hdr, &payload);
                while store.take_output(conn).is_some() {}
            }
            None if taken == 0 => return,
            None => {}
        }
    }
}

/// The guest's xenstore ring page: each 4 KiB of input is written over the
/// page (indices included) and the ring is processed, as after a
/// notification from the guest.
pub fn xenstore_ring(data: &[u8]) {
    let mem = VecMem::new(2 * 4096);
    let mut store = new_store();
    let mut ring = GuestRing::new(&mut store, 4096, 1);
    for page in data.chunks(4096).take(8) {
        if mem.write(4096, page).is_err() {
            return;
        }
        for _ in 0..4 {
            let out = ring.process(&mem, &mut store);
            if !out.more_work {
                break;
            }
        }
    }
}

fn new_store() -> Store {
    let mut store = Store::new();
    let _ = xen_shim::xenstore::domain::populate_dom0(&mut store);
    let _ = xen_shim::xenstore::domain::populate_domain(&mut store, 1, "fuzz", 65536, 1);
    store
}

/// An xl.cfg file: parsed, checked and printed as JSON.
pub fn xlcfg(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((cfg, _)) = api::xlcfg::load(text, "fuzz.cfg", &[]) {
        let _ = api::xlcfg::to_json(&cfg);
    }
}

/// A `grub.cfg` and a `menu.lst` (the same text, both parsers).
pub fn pygrub_menu(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = devices::pygrub::fuzzing::grub_cfg(&text);
    let _ = devices::pygrub::fuzzing::menu_lst(&text);
}

/// A guest disk (the input, in memory): partition tables, file systems,
/// the boot config and the kernel pygrub would load.
pub fn pygrub_disk(data: &[u8]) {
    let img = MemImage(data.to_vec());
    let _ = devices::pygrub::fuzzing::partitions(&img);
    let _ = devices::pygrub::load_default(&img, &[]);
}

/// A read-only disk image in memory.
pub struct MemImage(pub Vec<u8>);

impl DiskImage for MemImage {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let start = usize::try_from(offset).map_err(|_| range())?;
        let end = start.checked_add(buf.len()).ok_or_else(range)?;
        let src = self.0.get(start..end).ok_or_else(range)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<(), DiskError> {
        Err(range())
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
        "raw"
    }
}

fn range() -> DiskError {
    DiskError::Io {
        path: "fuzz".into(),
        op: "access",
        offset: 0,
        len: 0,
        source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "out of range"),
    }
}

/// blkback ring entries (`struct blkif_request`, indirect ones too),
/// parsed and run against a small in-memory disk of a test domain whose
/// grant table the rest of the input fills.
pub fn blkback_request(data: &[u8]) {
    use devices::blkback::{io, proto};
    let (dom, _) = xen_shim::testing::test_domain(32);
    let Some((grants, reqs)) = data.split_at_checked(256) else {
        return;
    };
    let _ = dom.mem.write(dom.layout.grant_gpa, grants);
    let disk = io::Disk {
        image: Arc::new(MemImage(vec![0u8; 64 * 512])),
        read_only: true,
        sectors: 64,
    };
    let mut buf = Vec::new();
    for e in reqs.chunks_exact(proto::ENTRY).take(16) {
        let mut b = [0u8; proto::ENTRY];
        b.copy_from_slice(e);
        let p = proto::parse(&b, 8);
        let _ = io::execute(&dom, &disk, &p, &mut buf);
    }
}
