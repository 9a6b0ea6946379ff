//! HYPERVISOR_console_io.
//!
//! On Xen, CONSOLEIO_write is the hypervisor's own console: a release
//! build refuses it to unprivileged domains (-EPERM), and Linux then falls
//! back to its console ring (`earlyprintk=xen`, `xen_raw_console_write`).
//! In xenkvm the monitor's console *is* the guest's console, so the call is
//! kept for every domain, as early boot output uses it; but it is bounded:
//! at most [`MAX_WRITE`] bytes per call and a per-domain byte budget
//! ([`BURST`] bytes, refilled at [`PER_SECOND`] bytes a second of guest
//! system time). Once the budget is spent the call fails with -EPERM, as
//! Xen's does, and Linux writes to its ring instead.

use std::sync::Mutex;

use crate::abi::errno::*;
use crate::vcpu::PvVcpu;

/// Bytes one CONSOLEIO_write may carry (longer writes are truncated).
pub const MAX_WRITE: u64 = 16384;
/// Bytes a domain may write in a burst (a whole early boot log fits).
pub const BURST: u64 = 256 * 1024;
/// Bytes a second a domain may write in the long run.
pub const PER_SECOND: u64 = 16 * 1024;

const CONSOLEIO_WRITE: u64 = 0;

/// The per-domain console_io byte budget.
#[derive(Debug)]
pub struct ConsoleBudget {
    inner: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    bytes: u64,
    last_ns: u64,
}

impl Default for ConsoleBudget {
    fn default() -> Self {
        ConsoleBudget {
            inner: Mutex::new(Bucket {
                bytes: BURST,
                last_ns: 0,
            }),
        }
    }
}

impl ConsoleBudget {
    /// Take up to `want` bytes at system time `now_ns`; returns how many.
    pub fn take(&self, now_ns: u64, want: u64) -> u64 {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now_ns.saturating_sub(b.last_ns);
        let add = u64::try_from(u128::from(elapsed) * u128::from(PER_SECOND) / 1_000_000_000)
            .unwrap_or(u64::MAX);
        if add > 0 {
            b.bytes = b.bytes.saturating_add(add).min(BURST);
            b.last_ns = now_ns;
        } else if now_ns < b.last_ns {
            // Time went backwards (not expected): restart from here.
            b.last_ns = now_ns;
        }
        let n = want.min(b.bytes);
        b.bytes -= n;
        n
    }
}

pub fn console_io(v: &mut PvVcpu, cmd: u64, count: u64, buf: u64) -> Result<i64, i64> {
    if cmd != CONSOLEIO_WRITE {
        return Err(-ENOSYS);
    }
    let want = count.min(MAX_WRITE);
    if want == 0 {
        return Ok(0);
    }
    let now = v.dom.clock.now_ns(v.dom.platform.tsc());
    let n = v.dom.console_budget.take(now, want);
    if n == 0 {
        v.dom.log_once("console_io budget", 0, || {
            format!("console_io: the guest wrote more than {BURST} bytes at over {PER_SECOND} B/s; further writes refused (-EPERM) until it slows down")
        });
        return Err(-EPERM);
    }
    let mut b = vec![0u8; n as usize];
    v.copy_from(buf, &mut b)?;
    v.dom.platform.console_write(&b);
    Ok(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{map_low_memory, test_domain};

    #[test]
    fn budget_refills_with_time_and_is_capped() {
        let b = ConsoleBudget::default();
        assert_eq!(b.take(0, BURST + 10), BURST);
        assert_eq!(b.take(0, 1), 0);
        // Half a second later: half a second's worth.
        assert_eq!(b.take(500_000_000, u64::MAX), PER_SECOND / 2);
        // A long pause refills to the burst, not beyond.
        assert_eq!(b.take(u64::MAX, u64::MAX), BURST);
    }

    /// Issue 12 item 13: console_io output is bounded per domain.
    #[test]
    fn console_io_stops_at_the_budget_with_eperm() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        // The test clock stands still: no refill.
        let mut written = 0;
        loop {
            match console_io(&mut v, 0, u64::MAX, 0x10000) {
                Ok(n) => {
                    assert!(n as u64 <= MAX_WRITE);
                    written += n as u64;
                }
                Err(e) => {
                    assert_eq!(e, -EPERM);
                    break;
                }
            }
            assert!(written <= BURST, "wrote past the budget");
        }
        assert_eq!(written, BURST);
        assert_eq!(console_io(&mut v, 1, 1, 0x10000), Err(-ENOSYS));
    }
}
