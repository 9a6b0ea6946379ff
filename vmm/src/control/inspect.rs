//! The xl verbs that look at domains: `domid`, `domname`, `uptime`,
//! `vcpu-list`, `dmesg`; and `sysrq`, `vcpu-set`; in xl's output formats.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::bail;
use api::control::client::Client;
use api::control::VcpuInfo;

use super::registry::{Entry, RunDir};
use super::vcpus;

const DOM0: &str = "Domain-0";

fn is_dom0(dom: &str) -> bool {
    dom == DOM0 || dom.parse::<u32>() == Ok(0)
}

fn client(e: &Entry) -> Client {
    let mut c = Client::new(&e.api_socket());
    c.timeout = std::time::Duration::from_secs(10);
    c
}

/// `xenkvm domid NAME`: the domain's id (0 for Domain-0).
pub fn domid(run: &RunDir, name: &str) -> anyhow::Result<ExitCode> {
    if name == DOM0 {
        println!("0");
        return Ok(ExitCode::SUCCESS);
    }
    match run.entries().into_iter().find(|e| e.name == name) {
        Some(Entry { id: Some(id), .. }) => println!("{id}"),
        _ => bail!("domain '{name}' not found"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm domname ID`: the domain's name (Domain-0 for 0).
pub fn domname(run: &RunDir, id: &str) -> anyhow::Result<ExitCode> {
    let Ok(n) = id.parse::<u32>() else {
        bail!("'{id}' is not a domain id (a number; `xenkvm domid NAME` goes the other way)");
    };
    if n == 0 {
        println!("{DOM0}");
        return Ok(ExitCode::SUCCESS);
    }
    match run.entries().into_iter().find(|e| e.id == Some(n)) {
        Some(e) => println!("{}", e.name),
        None => {
            bail!("Can't get domain name of domain id '{n}', maybe this domain does not exist.")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The domains `doms` names (all when empty); `true` in the second place
/// when Domain-0 is among them (first, when listing all).
fn pick(run: &RunDir, doms: &[String]) -> anyhow::Result<(bool, Vec<Entry>)> {
    let entries = run.entries();
    if doms.is_empty() {
        return Ok((true, entries));
    }
    let mut with_dom0 = false;
    let mut out = Vec::new();
    for d in doms {
        if is_dom0(d) {
            with_dom0 = true;
            continue;
        }
        let id = d.parse::<u32>().ok();
        match entries
            .iter()
            .find(|e| &e.name == d || (id.is_some() && e.id == id))
        {
            Some(e) => out.push(e.clone()),
            None => bail!("domain '{d}' not found"),
        }
    }
    Ok((with_dom0, out))
}

/// xl's uptime text: `[D day[s], ]HH:MM:SS`, or `[D day[s], ]HH:MM` in
/// short mode (hours padded to two columns with a blank, as xl does).
pub fn uptime_string(secs: u64, short: bool) -> String {
    let (day, rest) = (secs / 86400, secs % 86400);
    let (hour, min, sec) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let days = match day {
        0 => String::new(),
        1 => "1 day, ".to_string(),
        d => format!("{d} days, "),
    };
    if short {
        format!("{days}{hour:>2}:{min:02}")
    } else {
        format!("{days}{hour:>2}:{min:02}:{sec:02}")
    }
}

/// `HH:MM:SS` of `now` in local time.
pub(crate) fn local_hms(now: u64) -> String {
    let t = now as libc::time_t;
    // SAFETY: localtime_r fills the zeroed tm from t.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// One `xl uptime` line.
pub fn uptime_row(name: &str, id: u32, secs: u64, short: Option<u64>) -> String {
    match short {
        Some(now) => format!(
            " {} up {}, {name} ({id})",
            local_hms(now),
            uptime_string(secs, true)
        ),
        None => format!("{name:<33} {id:>4} {}", uptime_string(secs, false)),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `xenkvm uptime [-s] [DOM...]`.
pub fn uptime(run: &RunDir, short: bool, doms: &[String]) -> anyhow::Result<ExitCode> {
    let (with_dom0, entries) = pick(run, doms)?;
    let now = now_s();
    let mode = short.then_some(now);
    if !short {
        println!("{:<33} {:>4} Uptime", "Name", "ID");
    }
    if with_dom0 {
        let up = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split('.').next()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        println!("{}", uptime_row(DOM0, 0, up, mode));
    }
    for e in entries {
        match client(&e).info(&e.name) {
            Ok(i) => println!(
                "{}",
                uptime_row(&i.name, i.id, now.saturating_sub(i.started), mode)
            ),
            Err(err) => log::warn!("domain {}: {err}", e.name),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Domain-0's "vCPUs": the host's CPUs, with their time from /proc/stat.
fn dom0_vcpus() -> Vec<VcpuInfo> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu: u32 = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let ticks: u64 = f.take(3).filter_map(|v| v.parse::<u64>().ok()).sum();
            Some(VcpuInfo {
                id: cpu,
                online: true,
                running: true,
                blocked: false,
                cpu: Some(cpu),
                time_s: ticks as f64 / hz,
                affinity: "all".into(),
            })
        })
        .collect()
}

/// `xenkvm vcpu-list [DOM...]`.
pub fn vcpu_list(run: &RunDir, doms: &[String]) -> anyhow::Result<ExitCode> {
    let (with_dom0, entries) = pick(run, doms)?;
    let mut out = vcpus::header();
    out.push('\n');
    if with_dom0 {
        for v in dom0_vcpus() {
            out.push_str(&vcpus::row(DOM0, 0, &v));
            out.push('\n');
        }
    }
    for e in entries {
        let c = client(&e);
        match c.vcpus(&e.name) {
            Ok(vs) => {
                for v in vs {
                    out.push_str(&vcpus::row(&e.name, e.id.unwrap_or(0), &v));
                    out.push('\n');
                }
            }
            Err(err) => log::warn!("domain {}: {err}", e.name),
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm dmesg [DOM...]`. Xen's `xl dmesg` prints the hypervisor's
/// log; here each domain has its own "hypervisor", its monitor process, so
/// this prints the monitors' logs (of `DOM`, or of every domain, each line
/// prefixed with `(NAME) `). The guest's own kernel log is on its console.
pub fn dmesg(run: &RunDir, doms: &[String]) -> anyhow::Result<ExitCode> {
    let (_, entries) = pick(run, doms)?;
    let prefix = doms.is_empty();
    for e in entries {
        let path = e.dir.join("log");
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            // A foreground domain (`create -F`) logs to its terminal.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => bail!("cannot read {}: {err}", path.display()),
        };
        if prefix {
            for line in text.lines() {
                println!("({}) {line}", e.name);
            }
        } else {
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm vcpu-set DOM COUNT`: the guest brings vCPUs online or takes
/// them offline (xenstore `cpu/N/availability`, as xl does).
pub fn vcpu_set(run: &RunDir, dom: &str, count: u32) -> anyhow::Result<ExitCode> {
    let e = run.find(dom)?;
    client(&e).vcpu_set(&e.name, count)?;
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm mem-set DOM SIZE` (the guest's balloon target) and `xenkvm
/// mem-max DOM SIZE` (the domain's maximum). SIZE as xl takes it: MiB
/// when plain, or with a unit (`512m`, `1g`).
pub fn memory(run: &RunDir, dom: &str, size: &str, max: bool) -> anyhow::Result<ExitCode> {
    let mib = api::xlcfg::size::parse_mib(size)
        .map_err(|e| anyhow::anyhow!("invalid memory size {size:?}: {e}"))?;
    let req = if max {
        api::control::MemoryRequest {
            target_mib: None,
            max_mib: Some(mib),
        }
    } else {
        api::control::MemoryRequest {
            target_mib: Some(mib),
            max_mib: None,
        }
    };
    let e = run.find(dom)?;
    client(&e).memory(&e.name, &req)?;
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm sysrq DOM KEY`: the guest's xenstore `control/sysrq`, which
/// Linux's Xen driver reads and hands to its SysRq handler.
pub fn sysrq(run: &RunDir, dom: &str, key: &str) -> anyhow::Result<ExitCode> {
    let mut chars = key.chars();
    let k = match (chars.next(), chars.next()) {
        (Some(k), None) if k.is_ascii_graphic() => k,
        _ => bail!("invalid sysrq key {key:?}: one character, e.g. `h` for help"),
    };
    let e = run.find(dom)?;
    client(&e).sysrq(&e.name, k)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_strings_as_xl() {
        assert_eq!(uptime_string(59, false), " 0:00:59");
        assert_eq!(uptime_string(3725, false), " 1:02:05");
        assert_eq!(uptime_string(86400 + 36000 + 60, false), "1 day, 10:01:00");
        assert_eq!(uptime_string(3 * 86400 + 5, false), "3 days,  0:00:05");
        assert_eq!(uptime_string(3725, true), " 1:02");
        assert_eq!(uptime_string(2 * 86400 + 3725, true), "2 days,  1:02");
    }

    #[test]
    fn uptime_rows_as_xl() {
        // "%-33s %4d %s"
        assert_eq!(
            uptime_row("web01", 3, 3725, None),
            format!("{:<33}    3  1:02:05", "web01")
        );
        // " %s up %s, %s (%d)"
        let r = uptime_row("web01", 3, 3725, Some(0));
        assert!(
            r.starts_with(' ') && r.ends_with(" up  1:02, web01 (3)"),
            "{r}"
        );
        assert_eq!(r.len(), " HH:MM:SS up  1:02, web01 (3)".len(), "{r}");
    }

    #[test]
    fn domain_0_has_the_host_cpus() {
        let v = dom0_vcpus();
        assert!(!v.is_empty(), "no cpuN lines in /proc/stat");
        assert!(v.iter().enumerate().all(|(i, c)| c.id as usize == i));
    }
}
