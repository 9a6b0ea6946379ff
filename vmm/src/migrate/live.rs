//! Live migration's sender: iterative pre-copy while the guest runs, then
//! a final round once it has suspended.
//!
//! Round 0 sends all memory; each later round sends the frames KVM's dirty
//! log names, until few are left or [`MAX_ROUNDS`] is reached. The final
//! round (guest suspended, backends stopped) sends the frames still dirty,
//! every frame whose type changed since it was sent, and every frame whose
//! contents no longer hash to what was sent: that catches the writes the
//! dirty log cannot see, those of the monitor itself (backends writing
//! granted pages, xen-shim writing guest memory). The hashes use a key
//! drawn per migration, so a guest cannot aim for a collision.

use std::hash::BuildHasher;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use xen_shim::domain::Domain;

use super::dirty::DirtyLog;
use super::stream::pfinfo;
use super::{save, MigrateError, SuspendedVcpu};

/// Pre-copy rounds after the first before the guest is suspended anyway.
pub const MAX_ROUNDS: u32 = 8;
/// Suspend once a round has fewer dirty frames than this.
pub const FEW_PAGES: usize = 512;
/// What the receiver answers once the domain runs there (xl's
/// `migrate_receiver_ready`, on a line of its own).
pub const READY: &str = "domain received, ready to unpause";

/// The prefix of progress lines in the monitor's log (`migrate` shows them).
pub const PROGRESS: &str = "xenkvm: migrate: ";

/// A progress line, on the monitor's stderr (its log file), whatever the
/// log level: a handful per migration.
fn progress(what: &str) {
    eprintln!("{PROGRESS}{what}");
}

/// A transport: the stream goes out, the receiver's answer comes back.
pub trait Channel: Write + Send {
    /// Read the receiver's answer line (after the stream was sent).
    fn answer(&mut self, timeout: Duration) -> Result<String, MigrateError>;
}

impl Channel for std::os::unix::net::UnixStream {
    fn answer(&mut self, timeout: Duration) -> Result<String, MigrateError> {
        self.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        std::io::BufReader::new(&*self)
            .take(4096)
            .read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

use std::io::Read as _;

/// The sender's state between rounds.
pub struct PreCopy {
    out: std::io::BufWriter<Box<dyn Channel>>,
    hasher: std::collections::hash_map::RandomState,
    hashes: Vec<u64>,
    sent_ty: Vec<u8>,
    /// Dirty frames taken from the log but not sent yet.
    pending: Vec<u64>,
    pub rounds: Vec<u64>,
    pub started: Instant,
}

/// Progress of a migration, for the log and the answer.
#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    pub rounds: Vec<u64>,
    pub pages: u64,
    /// From the guest's suspend to the receiver's answer.
    pub downtime_ms: u64,
    pub total_ms: u64,
}

impl PreCopy {
    fn send(&mut self, dom: &Domain, pfns: &[u64], live: bool) -> Result<u64, MigrateError> {
        let (hasher, hashes, sent_ty) = (&self.hasher, &mut self.hashes, &mut self.sent_ty);
        let n = save::write_pages(
            &mut self.out,
            dom,
            pfns.iter().copied(),
            live,
            &mut |pfn, ty, page| {
                if let (Some(h), Some(t)) =
                    (hashes.get_mut(pfn as usize), sent_ty.get_mut(pfn as usize))
                {
                    *h = page.map_or(0, |p| hasher.hash_one(p));
                    *t = ty;
                }
            },
        )?;
        self.rounds.push(pfns.len() as u64);
        Ok(n)
    }

    /// Headers and the rounds while the guest runs.
    pub fn run(
        out: Box<dyn Channel>,
        config_json: &str,
        dom: &Domain,
        log: &DirtyLog,
    ) -> Result<PreCopy, MigrateError> {
        let nr = dom.layout.nr_pages;
        let mut p = PreCopy {
            out: std::io::BufWriter::with_capacity(1 << 20, out),
            hasher: Default::default(),
            hashes: vec![0; nr as usize],
            sent_ty: vec![pfinfo::XTAB; nr as usize],
            pending: Vec::new(),
            rounds: Vec::new(),
            started: Instant::now(),
        };
        save::write_prologue(&mut p.out, config_json)?;
        save::write_p2m_frames(&mut p.out, dom)?;
        log.start()?;
        let all: Vec<u64> = (0..nr).collect();
        p.send(dom, &all, true)?;
        progress(&format!("round 0 sent {nr} frames (all memory)"));
        for round in 1..=MAX_ROUNDS {
            let dirty = log.take(nr)?;
            if dirty.len() < FEW_PAGES || round == MAX_ROUNDS {
                progress(&format!(
                    "{} frames dirty after round {}; suspending the guest",
                    dirty.len(),
                    round - 1
                ));
                p.pending = dirty;
                break;
            }
            p.send(dom, &dirty, true)?;
            progress(&format!("round {round} sent {} frames", dirty.len()));
        }
        p.out.flush()?;
        Ok(p)
    }

    /// The final round, the vCPU and the receiver's answer. The guest has
    /// suspended and the backends are stopped; `suspended_at` is when.
    pub fn finish(
        mut self,
        dom: &Domain,
        log: &DirtyLog,
        cpus: &[SuspendedVcpu],
        suspended_at: Instant,
    ) -> Result<LiveStats, MigrateError> {
        let nr = dom.layout.nr_pages;
        let mut last = std::mem::take(&mut self.pending);
        last.extend(log.take(nr)?);
        log.stop();
        let mut mark = vec![false; nr as usize];
        for &p in &last {
            if let Some(m) = mark.get_mut(p as usize) {
                *m = true;
            }
        }
        let mut page = vec![0u8; super::stream::PAGE_SIZE];
        {
            let mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
            for pfn in 0..nr {
                let i = pfn as usize;
                if mark[i] {
                    continue;
                }
                let ty = save::pfn_type(&mmu, pfn);
                let changed = if ty != self.sent_ty[i] {
                    true
                } else if pfinfo::has_data(ty) {
                    dom.mem
                        .read(pfn << 12, &mut page)
                        .map_err(|e| MigrateError::Memory(e.to_string()))?;
                    let level = ty & 7;
                    if (1..=4).contains(&level) {
                        save::normalise_table(&mut page, level, &|m| mmu.is_ram(m))?;
                    }
                    self.hasher.hash_one(&page[..]) != self.hashes[i]
                } else {
                    false
                };
                mark[i] = changed;
            }
        }
        let last: Vec<u64> = (0..nr).filter(|&p| mark[p as usize]).collect();
        self.send(dom, &last, false)?;
        progress(&format!(
            "final round sent {} frames; waiting for the receiver",
            last.len()
        ));
        save::write_epilogue(&mut self.out, dom, cpus)?;
        let mut ch = self
            .out
            .into_inner()
            .map_err(|e| MigrateError::Io(e.into_error()))?;
        let answer = ch.answer(Duration::from_secs(120))?;
        if answer != READY {
            return Err(MigrateError::State(format!(
                "the receiver did not take the domain: {answer:?}"
            )));
        }
        Ok(LiveStats {
            pages: self.rounds.iter().sum(),
            rounds: self.rounds,
            downtime_ms: suspended_at.elapsed().as_millis() as u64,
            total_ms: self.started.elapsed().as_millis() as u64,
        })
    }
}
