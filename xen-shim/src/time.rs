//! PV time: the TSC scale and the vcpu_time_info / wallclock records.

use crate::abi::shinfo;
use crate::mem::{GuestMem, MemError};

/// TSC → nanoseconds scale as Xen's `set_time_scale` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeScale {
    pub mul: u32,
    pub shift: i8,
}

impl TimeScale {
    pub fn from_hz(hz: u64) -> TimeScale {
        let mut hz = hz.max(1);
        let mut shift: i8 = 0;
        while hz > 2_000_000_000 {
            hz >>= 1;
            shift -= 1;
        }
        while hz <= 1_000_000_000 {
            hz <<= 1;
            shift += 1;
        }
        let mul = ((1_000_000_000u128 << 32) / hz as u128) as u32;
        TimeScale { mul, shift }
    }

    /// Nanoseconds for a TSC delta (the guest's own formula).
    pub fn ticks_to_ns(&self, delta: u64) -> u64 {
        let d = if self.shift >= 0 {
            delta << self.shift
        } else {
            delta >> (-self.shift)
        };
        ((d as u128 * self.mul as u128) >> 32) as u64
    }

    /// TSC delta for a number of nanoseconds (inverse, rounded down).
    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        let d = ((ns as u128) << 32) / self.mul.max(1) as u128;
        let d = d.min(u64::MAX as u128) as u64;
        if self.shift >= 0 {
            d >> self.shift
        } else {
            d.checked_shl((-self.shift) as u32).unwrap_or(u64::MAX)
        }
    }
}

/// The domain's clock: system time 0 is TSC value `tsc0`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub tsc0: u64,
    pub scale: TimeScale,
    pub tsc_khz: u64,
    /// UNIX time (ns) at system time 0.
    pub wallclock_ns: u64,
}

impl Clock {
    pub fn now_ns(&self, tsc: u64) -> u64 {
        self.scale.ticks_to_ns(tsc.saturating_sub(self.tsc0))
    }

    /// Write a vcpu_time_info at `gpa` with the version protocol.
    pub fn write_time_info(&self, mem: &dyn GuestMem, gpa: u64) -> Result<(), MemError> {
        let v = mem.read_u32(gpa)?;
        let odd = (v | 1).wrapping_add(if v & 1 == 1 { 2 } else { 0 });
        mem.write_u32(gpa, odd)?;
        mem.write_u64(gpa + 8, self.tsc0)?;
        mem.write_u64(gpa + 16, 0)?;
        mem.write_u32(gpa + 24, self.scale.mul)?;
        mem.write_u8(gpa + 28, self.scale.shift as u8)?;
        mem.write_u8(gpa + 29, 1)?; // TSC_STABLE
        mem.write_u32(gpa, odd.wrapping_add(1))
    }

    /// A complete vcpu_time_info (version 2, stable TSC) as bytes.
    pub fn encode_time_info(&self, b: &mut [u8; 32]) {
        b.fill(0);
        b[..4].copy_from_slice(&2u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc0.to_le_bytes());
        b[24..28].copy_from_slice(&self.scale.mul.to_le_bytes());
        b[28] = self.scale.shift as u8;
        b[29] = 1; // PVCLOCK_TSC_STABLE_BIT
    }

    /// Write the wallclock fields of shared_info.
    pub fn write_wallclock(&self, mem: &dyn GuestMem, shared_info: u64) -> Result<(), MemError> {
        let v = mem.read_u32(shared_info + shinfo::WC_VERSION)?;
        let odd = v.wrapping_add(if v & 1 == 0 { 1 } else { 2 });
        mem.write_u32(shared_info + shinfo::WC_VERSION, odd)?;
        let sec = self.wallclock_ns / 1_000_000_000;
        mem.write_u32(shared_info + shinfo::WC_SEC, sec as u32)?;
        mem.write_u32(
            shared_info + shinfo::WC_NSEC,
            (self.wallclock_ns % 1_000_000_000) as u32,
        )?;
        mem.write_u32(shared_info + shinfo::WC_SEC_HI, (sec >> 32) as u32)?;
        mem.write_u32(shared_info + shinfo::WC_VERSION, odd.wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_matches_xen_example() {
        let s = TimeScale::from_hz(2_400_000_000);
        assert_eq!(s.shift, -1);
        assert_eq!(s.mul, 0xd555_5555);
        // one second of ticks is one second, within a few ns
        let ns = s.ticks_to_ns(2_400_000_000);
        assert!((999_999_990..=1_000_000_000).contains(&ns), "{ns}");
        let t = s.ns_to_ticks(1_000_000_000);
        assert!((2_399_999_990..=2_400_000_010).contains(&t), "{t}");
    }

    #[test]
    fn version_protocol_ends_even() {
        let m = crate::mem::VecMem::new(8192);
        let c = Clock {
            tsc0: 5,
            scale: TimeScale::from_hz(3_000_000_000),
            tsc_khz: 3_000_000,
            wallclock_ns: 1_700_000_000_123,
        };
        c.write_time_info(&m, 64).unwrap();
        assert_eq!(m.read_u32(64).unwrap() % 2, 0);
        c.write_time_info(&m, 64).unwrap();
        assert_eq!(m.read_u32(64).unwrap() % 2, 0);
        c.write_wallclock(&m, 0).unwrap();
        assert_eq!(m.read_u32(shinfo::WC_SEC).unwrap(), 1700);
        assert_eq!(m.read_u32(shinfo::WC_VERSION).unwrap() % 2, 0);
    }
}
