//! `xenkvm top`: one screen of `xentop -b -i 1`, the columns xenkvm has.
//!
//! xentop's network and block traffic columns (NETTX/NETRX, VBD_*) and SSID
//! are left out: the backends keep no such counters yet, and zeros would
//! be a lie. CPU(%) is measured over one second, as xentop's second sample.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use api::control::client::Client;
use api::control::{DomainInfo, DomainState};

use super::registry::{Entry, RunDir};

/// (header, width) as xentop's field table has them.
const FIELDS: [(&str, usize); 11] = [
    ("NAME", 10),
    ("STATE", 6),
    ("CPU(sec)", 10),
    ("CPU(%)", 6),
    ("MEM(k)", 10),
    ("MEM(%)", 6),
    ("MAXMEM(k)", 10),
    ("MAXMEM(%)", 9),
    ("VCPUS", 5),
    ("NETS", 4),
    ("VBDS", 4),
];

/// The column headers, each right-aligned to its width.
pub fn header() -> String {
    FIELDS
        .iter()
        .map(|(h, w)| format!("{h:>w$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One domain's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub flags: DomainState,
    pub cpu_s: f64,
    pub cpu_pct: f64,
    pub mem_kib: u64,
    /// None: "no limit" (Domain-0).
    pub maxmem_kib: Option<u64>,
    pub vcpus: u32,
    pub nets: usize,
    pub vbds: usize,
}

/// xentop's state letters: `d s b c p r`.
fn state(f: &DomainState) -> String {
    let crashed = f.shutdown && f.reason == Some(api::control::ShutdownReason::Crash);
    [
        (f.dying, 'd'),
        (f.shutdown, 's'),
        (f.blocked, 'b'),
        (crashed, 'c'),
        (f.paused, 'p'),
        (f.running, 'r'),
    ]
    .iter()
    .map(|&(on, c)| if on { c } else { '-' })
    .collect()
}

/// One row in xentop's formats (`%10.10s`, `%10llu`, `%6.1f`, ...).
pub fn row(r: &Row, host_kib: u64) -> String {
    let pct = |kib: u64| kib as f64 * 100.0 / host_kib.max(1) as f64;
    let name: String = r.name.chars().take(10).collect();
    let (maxmem, maxpct) = match r.maxmem_kib {
        Some(k) => (k.to_string(), format!("{:.1}", pct(k))),
        None => ("no limit".to_string(), "n/a".to_string()),
    };
    format!(
        "{name:>10} {:>6} {:>10} {:>6.1} {:>10} {:>6.1} {maxmem:>10} {maxpct:>9} {:>5} {:>4} {:>4}",
        state(&r.flags),
        r.cpu_s as u64,
        r.cpu_pct,
        r.mem_kib,
        pct(r.mem_kib),
        r.vcpus,
        r.nets,
        r.vbds
    )
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with(key))?.to_string();
            l.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The host's CPU seconds (user + nice + system), as `list` shows them.
fn host_cpu_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(3)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ticks as f64 / hz
}

fn sample(entries: &[Entry]) -> Vec<Option<DomainInfo>> {
    entries
        .iter()
        .map(|e| {
            let mut c = Client::new(&e.api_socket());
            c.timeout = Duration::from_secs(5);
            c.info(&e.name).ok()
        })
        .collect()
}

/// How many vifs and disks the domain has (as hotplug left them), else
/// its config's.
fn devices(e: &Entry) -> (usize, usize) {
    let mut c = Client::new(&e.api_socket());
    c.timeout = Duration::from_secs(5);
    if let (Ok(n), Ok(d)) = (c.nics(&e.name), c.disks(&e.name)) {
        return (n.len(), d.len());
    }
    std::fs::read_to_string(e.dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<api::xlcfg::DomainConfig>(&t).ok())
        .map_or((0, 0), |c| (c.vifs.len(), c.disks.len()))
}

/// `xenkvm top`: the header lines and one row per domain, Domain-0 first.
pub fn top(run: &RunDir) -> anyhow::Result<ExitCode> {
    let entries = run.entries();
    let t0 = Instant::now();
    let host0 = host_cpu_s();
    let first = sample(&entries);
    std::thread::sleep(Duration::from_secs(1));
    let second = sample(&entries);
    let elapsed = t0.elapsed().as_secs_f64().max(0.001);
    let host1 = host_cpu_s();
    let host_kib = meminfo_kib("MemTotal:");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;

    let mut rows = vec![Row {
        name: "Domain-0".into(),
        flags: DomainState {
            running: true,
            ..Default::default()
        },
        cpu_s: host1,
        cpu_pct: (host1 - host0) * 100.0 / elapsed,
        mem_kib: host_kib,
        maxmem_kib: None,
        vcpus: cpus,
        nets: 0,
        vbds: 0,
    }];
    for ((e, a), b) in entries.iter().zip(&first).zip(&second) {
        let Some(i) = b else { continue };
        let before = a.as_ref().map_or(i.time_s, |a| a.time_s);
        let (nets, vbds) = devices(e);
        rows.push(Row {
            name: i.name.clone(),
            flags: i.flags,
            cpu_s: i.time_s,
            cpu_pct: ((i.time_s - before) * 100.0 / elapsed).max(0.0),
            mem_kib: i.mem_mib << 10,
            maxmem_kib: Some(i.maxmem_mib << 10),
            vcpus: i.vcpus,
            nets,
            vbds,
        });
    }
    let count = |f: fn(&DomainState) -> bool| rows.iter().filter(|r| f(&r.flags)).count();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "xenkvm top - {}   xenkvm {}",
        super::inspect::local_hms(now),
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "{} domains: {} running, {} blocked, {} paused, {} crashed, {} dying, {} shutdown ",
        rows.len(),
        count(|f| f.running),
        count(|f| f.blocked),
        count(|f| f.paused),
        count(|f| f.shutdown && f.reason == Some(api::control::ShutdownReason::Crash)),
        count(|f| f.dying),
        count(|f| f.shutdown),
    );
    let free = meminfo_kib("MemAvailable:");
    println!(
        "Mem: {host_kib}k total, {}k used, {free}k free    CPUs: {cpus}",
        host_kib.saturating_sub(free)
    );
    println!("{}", header());
    for r in &rows {
        println!("{}", row(r, host_kib));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_rows_as_xentop() {
        let h = header();
        assert!(h.starts_with("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS VBDS"), "{h}");
        let r = Row {
            name: "a-very-long-name".into(),
            flags: DomainState {
                blocked: true,
                ..Default::default()
            },
            cpu_s: 12.7,
            cpu_pct: 3.3,
            mem_kib: 262144,
            maxmem_kib: Some(524288),
            vcpus: 2,
            nets: 1,
            vbds: 0,
        };
        let line = row(&r, 1048576);
        assert_eq!(
            line,
            "a-very-lon --b---         12    3.3     262144   25.0     524288      50.0     2    1    0"
        );
        assert_eq!(line.len(), h.len());
        let d0 = Row {
            name: "Domain-0".into(),
            maxmem_kib: None,
            ..r
        };
        let line = row(&d0, 1048576);
        assert!(line.contains("  no limit       n/a "), "{line}");
        assert_eq!(line.len(), h.len());
    }
}
