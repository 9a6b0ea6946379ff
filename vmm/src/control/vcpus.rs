//! `xenkvm vcpu-list`: each vCPU is a thread of the monitor, so its host
//! CPU, its CPU time and its affinity come from that thread in /proc and
//! from sched_getaffinity(2).

use std::sync::atomic::Ordering;

use api::control::VcpuInfo;
use xen_shim::domain::Domain;

use crate::platform::Host;

/// xl's header (`%-32s %5s %5s %5s %5s %9s %s`).
pub fn header() -> String {
    format!(
        "{:<32} {:>5} {:>5} {:>5} {:>5} {:>9} {}",
        "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)"
    )
}

/// One `xl vcpu-list` row.
pub fn row(name: &str, domid: u32, v: &VcpuInfo) -> String {
    let head = format!("{name:<32} {domid:>5} {:>5}", v.id);
    let cpu_state = match (v.online, v.cpu) {
        (true, Some(cpu)) => format!(
            "{cpu:>5}   {}{}- ",
            if v.running { 'r' } else { '-' },
            if v.blocked { 'b' } else { '-' }
        ),
        (true, None) => format!(
            "{:>5}   {}{}- ",
            '-',
            if v.running { 'r' } else { '-' },
            if v.blocked { 'b' } else { '-' }
        ),
        // xl shows an offline vCPU as `--p`.
        (false, _) => format!("{:>5}   --p ", '-'),
    };
    format!("{head}{cpu_state}{:>9.1}  {} / all", v.time_s, v.affinity)
}

/// CPUs as xl prints a bitmap: `all`, `none`, or ranges such as `0-3,6`.
pub fn bitmap_string(set: &[bool]) -> String {
    if set.is_empty() || set.iter().all(|&b| !b) {
        return "none".into();
    }
    if set.iter().all(|&b| b) {
        return "all".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < set.len() {
        if !set[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < set.len() && set[i + 1] {
            i += 1;
        }
        parts.push(if i > start {
            format!("{start}-{i}")
        } else {
            start.to_string()
        });
        i += 1;
    }
    parts.join(",")
}

/// The CPU a thread last ran on and its CPU seconds, from
/// `/proc/self/task/TID/stat`.
fn thread_stat(tid: u32) -> Option<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    parse_stat(&text)
}

/// Fields after the command (which may hold anything but ends at the last
/// `)`): state is the first, utime the 12th, stime the 13th, processor the
/// 37th.
fn parse_stat(text: &str) -> Option<(u32, f64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let cpu: u32 = f.get(36)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((cpu, (utime + stime) as f64 / hz))
}

/// The thread's CPU affinity as xl prints it.
fn affinity(tid: u32) -> String {
    let nr = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size is the set's; tid is a thread of this process.
    let r = unsafe {
        libc::sched_getaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    };
    if r != 0 {
        return "all".into();
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok();
    let nr = online
        .as_deref()
        .and_then(|s| s.trim().rsplit(['-', ',']).next()?.parse::<usize>().ok())
        .map_or(nr, |last| last + 1);
    // SAFETY: CPU_ISSET reads the set within its size.
    let bits: Vec<bool> = (0..nr)
        .map(|c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    bitmap_string(&bits)
}

/// The vCPUs of the current boot.
pub fn infos(host: &Host, dom: &Domain) -> Vec<VcpuInfo> {
    let online = dom.online.load(Ordering::SeqCst);
    let paused = host.control.is_paused();
    let blocked = host.control.blocked_mask();
    host.vcpus
        .iter()
        .enumerate()
        .map(|(i, sig)| {
            let id = i as u32;
            let bit = if id < 64 { 1u64 << id } else { 0 };
            let is_online = online & bit != 0;
            let tid = sig.tid.load(Ordering::SeqCst);
            let (cpu, time_s) = match (tid != 0).then(|| thread_stat(tid)).flatten() {
                Some((c, t)) => (Some(c), t),
                None => (None, 0.0),
            };
            let is_blocked = is_online && !paused && blocked & bit != 0;
            VcpuInfo {
                id,
                online: is_online,
                running: is_online && !paused && !is_blocked,
                blocked: is_blocked,
                cpu,
                time_s,
                affinity: if tid != 0 {
                    affinity(tid)
                } else {
                    "all".into()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_print_as_xl_does() {
        assert_eq!(bitmap_string(&[true, true, true]), "all");
        assert_eq!(bitmap_string(&[false, false]), "none");
        assert_eq!(bitmap_string(&[]), "none");
        assert_eq!(
            bitmap_string(&[true, true, false, true, false, true, true, true]),
            "0-1,3,5-7"
        );
        assert_eq!(bitmap_string(&[false, true, false]), "1");
    }

    #[test]
    fn stat_fields_after_the_command() {
        // A command with blanks and a `)` of its own.
        let mut text = "4242 (vcpu 0) x) S".to_string();
        // Fields 4..=39 after the state: ppid .. processor.
        for n in 4..=39 {
            text.push_str(&format!(
                " {}",
                match n {
                    14 => 250, // utime
                    15 => 50,  // stime
                    39 => 3,   // processor
                    _ => 0,
                }
            ));
        }
        let (cpu, secs) = parse_stat(&text).unwrap();
        assert_eq!(cpu, 3);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((secs - 300.0 / hz).abs() < 1e-9);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn rows_line_up_with_xl() {
        let v = VcpuInfo {
            id: 0,
            online: true,
            running: false,
            blocked: true,
            cpu: Some(1),
            time_s: 12.34,
            affinity: "all".into(),
        };
        let r = row("web01", 3, &v);
        // xl: "%-32s %5u %5u" "%5u %3c%c- " "%9.1f  " hard " / " soft.
        let want = format!(
            "{:<32}     3     0    1   -b-      12.3  all / all",
            "web01"
        );
        assert_eq!(r, want);
        // The id ends where the header's ID ends.
        let h = header();
        assert_eq!(r.find(" 3 ").map(|p| p + 2), h.find("ID").map(|p| p + 2));
        assert!(h.starts_with("Name "));
        assert!(h.ends_with("Time(s) Affinity (Hard / Soft)"), "{h}");
        let off = VcpuInfo {
            online: false,
            cpu: None,
            ..v
        };
        assert!(
            row("web01", 3, &off).contains("    -   --p "),
            "{}",
            row("web01", 3, &off)
        );
    }
}
