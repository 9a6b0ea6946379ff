//! The driver's side of a split virtqueue in the shadow region (the
//! backend is the device side): descriptor table, available ring and used
//! ring, laid out as in the virtio 1.x spec. Descriptors and used elements
//! have virtio-queue's layouts (its accessors for used elements are
//! test-only, so those are read by hand).

use virtio_bindings::virtio_ring::VRING_USED_F_NO_NOTIFY;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::split::VirtqUsedElem;
use vm_memory::ByteValued;

use super::shadow::Shadow;

/// Offsets of one queue's parts in the shadow region.
#[derive(Debug, Clone, Copy)]
pub struct VringLayout {
    pub size: u16,
    pub desc: usize,
    pub avail: usize,
    pub used: usize,
    /// First byte after the queue.
    pub end: usize,
}

impl VringLayout {
    pub fn at(base: usize, size: u16) -> VringLayout {
        let n = usize::from(size);
        let page = |x: usize| x.div_ceil(4096) * 4096;
        let desc = base;
        let avail = page(desc + 16 * n);
        let used = page(avail + 6 + 2 * n);
        let end = page(used + 6 + 8 * n);
        VringLayout {
            size,
            desc,
            avail,
            used,
            end,
        }
    }
}

/// Driver state of one queue.
pub struct DriverRing {
    pub layout: VringLayout,
    next_avail: u16,
    last_used: u16,
}

impl DriverRing {
    /// A fresh queue (indices zero, as SET_VRING_BASE 0 tells the backend).
    pub fn new(shadow: &Shadow, layout: VringLayout) -> DriverRing {
        shadow.write(layout.desc, &vec![0u8; layout.end - layout.desc]);
        DriverRing {
            layout,
            next_avail: 0,
            last_used: 0,
        }
    }

    /// Write descriptor `i` of the queue's table.
    pub fn set_desc(&self, shadow: &Shadow, i: u16, d: Descriptor) {
        assert!(i < self.layout.size);
        shadow.write(self.layout.desc + 16 * usize::from(i), d.as_slice());
    }

    /// Offer the chain at `head`; true when the backend wants a kick.
    pub fn push(&mut self, shadow: &Shadow, head: u16) -> bool {
        let l = &self.layout;
        let slot = usize::from(self.next_avail % l.size);
        shadow.write(l.avail + 4 + 2 * slot, &head.to_le_bytes());
        self.next_avail = self.next_avail.wrapping_add(1);
        // Release: the entry (and the descriptors) before the index.
        shadow.store_u16(l.avail + 2, self.next_avail);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        shadow.load_u16(l.used) & VRING_USED_F_NO_NOTIFY as u16 == 0
    }

    /// The next used element (head id, bytes written), if any.
    pub fn pop_used(&mut self, shadow: &Shadow) -> Option<(u32, u32)> {
        let l = &self.layout;
        let idx = shadow.load_u16(l.used + 2);
        if idx == self.last_used {
            return None;
        }
        let slot = usize::from(self.last_used % l.size);
        let mut e = [0u8; std::mem::size_of::<VirtqUsedElem>()];
        shadow.read(l.used + 4 + 8 * slot, &mut e);
        self.last_used = self.last_used.wrapping_add(1);
        let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        Some((id, u32::from_le_bytes([e[4], e[5], e[6], e[7]])))
    }

    /// Chains offered and not yet used.
    pub fn in_flight(&self) -> u16 {
        self.next_avail.wrapping_sub(self.last_used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_a_round_trip() {
        let l = VringLayout::at(0, 256);
        assert_eq!((l.desc, l.avail, l.used, l.end), (0, 4096, 8192, 12288));
        let s = Shadow::new(l.end).unwrap();
        let mut r = DriverRing::new(&s, l);
        r.set_desc(&s, 3, Descriptor::new(0x1000, 16, 4, 0));
        let mut d = [0u8; 16];
        s.read(l.desc + 48, &mut d);
        assert_eq!(&d[..8], &0x1000u64.to_le_bytes());
        assert!(r.push(&s, 3));
        assert_eq!(s.load_u16(l.avail + 2), 1);
        assert_eq!(r.in_flight(), 1);
        assert_eq!(r.pop_used(&s), None);
        // The device uses it: element {3, 1}, index 1.
        s.write(l.used + 4, &3u32.to_le_bytes());
        s.write(l.used + 8, &1u32.to_le_bytes());
        s.store_u16(l.used + 2, 1);
        assert_eq!(r.pop_used(&s), Some((3, 1)));
        assert_eq!(r.in_flight(), 0);
        s.store_u16(l.used, VRING_USED_F_NO_NOTIFY as u16);
        assert!(!r.push(&s, 0), "no kick asked");
    }
}
