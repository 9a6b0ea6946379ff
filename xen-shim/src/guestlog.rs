//! Logging of guest-triggered events with bounded memory and volume.
//!
//! A guest (even an unprivileged process in it) can trigger log lines at
//! will: unimplemented hypercalls, unknown MSRs, stray port writes. Each
//! domain therefore keeps a [`GuestLog`]: "once" messages are keyed by a
//! static id plus a number (never by the formatted text), at most
//! [`MAX_REMEMBERED`] keys are remembered, and every line it emits takes a
//! token from a per-domain bucket ([`BURST`] lines, refilled at
//! [`PER_SECOND`] a second). Lines refused by the bucket are counted and the
//! count is reported with the next line that gets through.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

/// Distinct (id, detail) keys remembered as already logged. Past this, new
/// keys are still logged (within the rate limit) but not remembered.
pub const MAX_REMEMBERED: usize = 256;
/// Lines a domain may log in a burst.
pub const BURST: u64 = 32;
/// Lines a second a domain may log in the long run.
pub const PER_SECOND: u64 = 4;

/// One token, in thousandths.
const TOKEN: u64 = 1000;

#[derive(Debug)]
struct Inner {
    seen: HashSet<(&'static str, u64)>,
    /// Thousandths of a token.
    tokens: u64,
    last: Option<Instant>,
    suppressed: u64,
    lines: u64,
}

/// The per-domain log of guest-triggered events.
#[derive(Debug)]
pub struct GuestLog {
    inner: Mutex<Inner>,
}

impl Default for GuestLog {
    fn default() -> Self {
        GuestLog::new()
    }
}

impl Inner {
    fn take_token(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let ms = now.saturating_duration_since(last).as_millis();
            let add = u64::try_from(ms)
                .unwrap_or(u64::MAX)
                .saturating_mul(PER_SECOND);
            self.tokens = self.tokens.saturating_add(add).min(BURST * TOKEN);
        }
        self.last = Some(now);
        if self.tokens < TOKEN {
            self.suppressed = self.suppressed.saturating_add(1);
            return false;
        }
        self.tokens -= TOKEN;
        self.lines = self.lines.saturating_add(1);
        true
    }

    fn suppressed_note(&mut self) -> String {
        match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" ({n} earlier guest-triggered log lines suppressed)"),
        }
    }
}

impl GuestLog {
    pub fn new() -> GuestLog {
        GuestLog {
            inner: Mutex::new(Inner {
                seen: HashSet::new(),
                tokens: BURST * TOKEN,
                last: None,
                suppressed: 0,
                lines: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Log `msg()` at info level the first time key (`id`, `detail`) is
    /// seen, within the rate limit; `msg` is only called when the line is
    /// emitted. Returns whether it was.
    pub fn once(&self, id: &'static str, detail: u64, msg: impl FnOnce() -> String) -> bool {
        self.once_at(Instant::now(), id, detail, msg)
    }

    /// [`GuestLog::once`] at a given time.
    pub fn once_at(
        &self,
        now: Instant,
        id: &'static str,
        detail: u64,
        msg: impl FnOnce() -> String,
    ) -> bool {
        let mut g = self.lock();
        if g.seen.contains(&(id, detail)) || !g.take_token(now) {
            return false;
        }
        if g.seen.len() < MAX_REMEMBERED {
            g.seen.insert((id, detail));
        }
        let note = g.suppressed_note();
        drop(g);
        log::info!("{}{note}", msg());
        true
    }

    /// Log `msg()` at `level` within the rate limit (for guest-triggered
    /// events that are worth more than one line). Returns whether it was.
    pub fn limited(&self, level: log::Level, msg: impl FnOnce() -> String) -> bool {
        self.limited_at(Instant::now(), level, msg)
    }

    /// [`GuestLog::limited`] at a given time.
    pub fn limited_at(
        &self,
        now: Instant,
        level: log::Level,
        msg: impl FnOnce() -> String,
    ) -> bool {
        if !log::log_enabled!(level) {
            return false;
        }
        let mut g = self.lock();
        if !g.take_token(now) {
            return false;
        }
        let note = g.suppressed_note();
        drop(g);
        log::log!(level, "{}{note}", msg());
        true
    }

    /// Keys remembered as logged.
    pub fn remembered(&self) -> usize {
        self.lock().seen.len()
    }

    /// Lines emitted so far.
    pub fn lines(&self) -> u64 {
        self.lock().lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn once_per_key_and_bounded_memory() {
        let l = GuestLog::new();
        let t = Instant::now();
        assert!(l.once_at(t, "a", 1, || "a 1".into()));
        assert!(!l.once_at(t, "a", 1, || unreachable!()));
        assert!(l.once_at(t, "a", 2, || "a 2".into()));
        assert!(l.once_at(t, "b", 1, || "b 1".into()));
        for i in 0..100_000u64 {
            l.once_at(t + Duration::from_secs(i), "port", i, String::new);
        }
        assert_eq!(l.remembered(), MAX_REMEMBERED);
    }

    #[test]
    fn guest_triggered_lines_are_rate_limited() {
        let l = GuestLog::new();
        let t = Instant::now();
        let emitted = (0..10_000u64)
            .filter(|&i| l.once_at(t, "x", i, String::new))
            .count() as u64;
        assert_eq!(emitted, BURST);
        // Refilled at PER_SECOND a second, up to BURST.
        let later = t + Duration::from_secs(1);
        let emitted = (10_000..20_000u64)
            .filter(|&i| l.once_at(later, "x", i, String::new))
            .count() as u64;
        assert_eq!(emitted, PER_SECOND);
        let much_later = t + Duration::from_secs(3600);
        let emitted = (20_000..30_000u64)
            .filter(|&i| l.once_at(much_later, "x", i, String::new))
            .count() as u64;
        assert_eq!(emitted, BURST);
        assert_eq!(l.lines(), 2 * BURST + PER_SECOND);
        // A key refused by the bucket is logged once tokens are back.
        let t2 = much_later + Duration::from_secs(60);
        assert!(l.once_at(t2, "late", 0, || "late".into()));
    }
}
