//! The xl-style verbs. Each finds the domain in the run directory and talks
//! to its monitor through the control API.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use api::control::client::Client;
use api::control::{CreateRequest, DomainInfo, DomainOp};

use super::registry::{pid_alive, Entry, RunDir};
use crate::console::{raw_mode, restore, ESCAPE};

/// xl's `list` header (a TAB before State and before Time(s)).
pub const LIST_HEADER: &str =
    "Name                                        ID   Mem VCPUs\tState\tTime(s)";

/// One `xl list` row: `%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f`.
pub fn list_row(name: &str, id: u32, mem_mib: u64, vcpus: u32, state: &str, time_s: f64) -> String {
    format!("{name:<40} {id:>5} {mem_mib:>5} {vcpus:>5}     {state:<6}  {time_s:>8.1}")
}

fn client(e: &Entry) -> Client {
    let mut c = Client::new(&e.api_socket());
    c.timeout = Duration::from_secs(10);
    c
}

fn find(run: &RunDir, dom: &str) -> anyhow::Result<Entry> {
    Ok(run.find(dom)?)
}

/// Domain-0, the host, as Xen users expect to see it on the first row:
/// its memory (MiB), CPUs and CPU seconds.
struct Host {
    mem_mib: u64,
    cpus: u32,
    time_s: f64,
}

fn host() -> Host {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
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
    Host {
        mem_mib: kib("MemTotal:") >> 10,
        cpus,
        time_s: ticks as f64 / hz,
    }
}

const DOM0: &str = "Domain-0";

impl Host {
    fn row(&self) -> String {
        list_row(DOM0, 0, self.mem_mib, self.cpus, "r-----", self.time_s)
    }

    /// Domain-0's `list -l` object, in the shape of the others'.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "domid": 0,
            "config": {
                "name": DOM0,
                "type": "pv",
                "memory_mib": self.mem_mib,
                "maxmem_mib": self.mem_mib,
                "vcpus": self.cpus,
                "maxvcpus": self.cpus,
            },
            "info": {
                "id": 0,
                "name": DOM0,
                "state": "r-----",
                "mem_mib": self.mem_mib,
                "maxmem_mib": self.mem_mib,
                "vcpus": self.cpus,
                "max_vcpus": self.cpus,
                "time_s": self.time_s,
            },
        })
    }
}

/// Is `dom` (a `list` argument) Domain-0?
fn is_dom0(dom: &str) -> bool {
    dom == DOM0 || dom.parse::<u32>() == Ok(0)
}

/// What `list` shows for a domain whose monitor does not answer.
fn fallback_info(e: &Entry) -> (u64, u32) {
    let cfg = std::fs::read_to_string(e.dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<api::xlcfg::DomainConfig>(&t).ok());
    cfg.map_or((0, 0), |c| (c.memory_mib, c.vcpus))
}

/// `xenkvm list [-l] [DOM...]`: Domain-0 first, as with xl (also by name
/// or id 0, and in `-l`).
pub fn list(run: &RunDir, long: bool, doms: &[String]) -> anyhow::Result<ExitCode> {
    let mut entries = run.entries();
    let mut with_host = doms.is_empty();
    if !doms.is_empty() {
        let mut picked = Vec::new();
        for d in doms {
            if is_dom0(d) {
                with_host = true;
                continue;
            }
            let id = d.parse::<u32>().ok();
            match entries
                .iter()
                .find(|e| &e.name == d || (id.is_some() && e.id == id))
            {
                Some(e) => picked.push(e.clone()),
                None => bail!("domain '{d}' not found"),
            }
        }
        entries = picked;
    }
    let host = with_host.then(host);
    let infos: Vec<(Entry, Option<DomainInfo>)> = entries
        .into_iter()
        .map(|e| {
            let i = client(&e).info(&e.name).ok();
            (e, i)
        })
        .collect();
    if long {
        let mut out: Vec<serde_json::Value> = host.iter().map(Host::json).collect();
        out.extend(infos.iter().map(|(e, i)| {
            let config = std::fs::read_to_string(e.dir.join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .unwrap_or(serde_json::Value::Null);
            serde_json::json!({"domid": e.id, "config": config, "info": i})
        }));
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    out.push_str(LIST_HEADER);
    out.push('\n');
    if let Some(h) = &host {
        out.push_str(&h.row());
        out.push('\n');
    }
    for (e, i) in &infos {
        let row = match i {
            Some(i) => list_row(&i.name, i.id, i.mem_mib, i.vcpus, &i.state, i.time_s),
            None => {
                let (mem, vcpus) = fallback_info(e);
                list_row(&e.name, e.id.unwrap_or(0), mem, vcpus, "------", 0.0)
            }
        };
        out.push_str(&row);
        out.push('\n');
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm console DOM`.
pub fn console(run: &RunDir, dom: &str) -> anyhow::Result<ExitCode> {
    let e = find(run, dom)?;
    let c = client(&e).console(&e.name)?;
    let label = match e.id {
        Some(id) => format!("{} (id {id})", e.name),
        None => e.name.clone(),
    };
    attach(Path::new(&c.socket), &label)
}

/// After the end of our input, guest output is still shown until it has
/// been quiet this long (what a piped command prints), but no longer than
/// [`EOF_LINGER_MAX`].
const EOF_QUIET: Duration = Duration::from_millis(500);
const EOF_LINGER_MAX: Duration = Duration::from_secs(5);

/// The line printed (on stderr) when a console is attached.
pub fn banner(label: &str) -> String {
    format!("Connected to domain {label}. Escape character is ^] (Ctrl-] detaches)")
}

/// Attach this terminal to a console socket until Ctrl-] (detach, exit 0),
/// the end of our input, or until the domain goes away.
pub fn attach(sock: &Path, label: &str) -> anyhow::Result<ExitCode> {
    let stream =
        UnixStream::connect(sock).with_context(|| format!("console {}", sock.display()))?;
    let mut from_guest = stream.try_clone()?;
    let mut to_guest = stream;
    eprintln!("{}", banner(label));
    raw_mode();
    let start = Instant::now();
    let last_output = Arc::new(AtomicU64::new(0));
    let seen = last_output.clone();
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        loop {
            match from_guest.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let _ = out.flush();
                    seen.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                }
            }
        }
        // The domain is gone (or we detached and closed the socket).
        restore();
        std::process::exit(0);
    });
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        if let Some(p) = data.iter().position(|&b| b == ESCAPE) {
            let _ = to_guest.write_all(&data[..p]);
            let _ = to_guest.shutdown(std::net::Shutdown::Both);
            restore();
            return Ok(ExitCode::SUCCESS);
        }
        if to_guest.write_all(data).is_err() {
            break;
        }
    }
    // The end of our input: show what the guest still prints in answer,
    // then detach.
    let eof = Instant::now();
    while !output.is_finished() && eof.elapsed() < EOF_LINGER_MAX {
        let quiet_since = Duration::from_millis(last_output.load(Ordering::SeqCst));
        let now = start.elapsed();
        if now.saturating_sub(quiet_since.max(eof - start)) >= EOF_QUIET {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = to_guest.shutdown(std::net::Shutdown::Both);
    restore();
    Ok(ExitCode::SUCCESS)
}

/// Wait until `pid` is gone; false on timeout.
pub(crate) fn wait_gone(pid: u32, timeout: Option<Duration>) -> bool {
    let start = Instant::now();
    while pid_alive(pid) {
        if timeout.is_some_and(|t| start.elapsed() > t) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn op(run: &RunDir, dom: &str, o: DomainOp) -> anyhow::Result<(Entry, DomainInfo)> {
    let e = find(run, dom)?;
    let i = client(&e).op(&e.name, o)?;
    Ok((e, i))
}

/// How long `shutdown -w` waits by default: xendomains'
/// `XENDOMAINS_STOP_MAXWAIT` (xl itself would wait for ever).
pub const SHUTDOWN_WAIT_S: u64 = 300;

/// Where a domain asked to shut down is.
enum ShutdownPoll {
    Done,
    Waiting,
    /// Gave up; why (printed).
    TimedOut(String),
}

fn poll_shutdown(e: &Entry, elapsed: Duration, timeout: Option<Duration>) -> ShutdownPoll {
    if !e.alive() {
        return ShutdownPoll::Done;
    }
    match client(e).info(&e.name) {
        Ok(i) if i.flags.shutdown => ShutdownPoll::Done,
        Ok(i) if timeout.is_some_and(|t| elapsed >= t) => {
            let why = if i.flags.paused {
                format!(
                    "it is paused (`xenkvm unpause {}` lets it act on the request)",
                    e.name
                )
            } else {
                "the guest ignored the request (no Xen PV shutdown support, \
                 or it is busy or hung)"
                    .to_string()
            };
            ShutdownPoll::TimedOut(format!(
                "xenkvm: domain {} (id {}) did not shut down within {} s: {why}.\n\
                 xenkvm: `xenkvm destroy {}` stops it at once.",
                e.name,
                i.id,
                elapsed.as_secs(),
                e.name
            ))
        }
        _ => ShutdownPoll::Waiting,
    }
}

/// `xenkvm shutdown [-w [-t SECS]] DOM` or `shutdown -a [-w ...]` (every
/// domain, as `xl shutdown -a`): with `-w`, wait until the domains have
/// shut down, at most `timeout` (None: for ever); then say how to stop
/// those left anyway and fail.
pub fn shutdown(
    run: &RunDir,
    dom: Option<&str>,
    wait: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let entries = match dom {
        Some(d) => vec![find(run, d)?],
        None => run.entries(),
    };
    let mut failed = false;
    let mut asked = Vec::new();
    for e in entries {
        match client(&e).op(&e.name, DomainOp::Shutdown) {
            Ok(i) => {
                eprintln!("Shutting down domain {}", i.id);
                asked.push((e, i.id));
            }
            // With -a, the others are still asked.
            Err(err) if dom.is_none() => {
                eprintln!("xenkvm: domain {}: {err}", e.name);
                failed = true;
            }
            Err(err) => return Err(err.into()),
        }
    }
    if wait {
        eprintln!("Waiting for {} domains", asked.len());
        let start = Instant::now();
        while !asked.is_empty() {
            asked.retain(|(e, id)| match poll_shutdown(e, start.elapsed(), timeout) {
                ShutdownPoll::Done => {
                    eprintln!("Domain {id} has been shut down, reason code 0");
                    false
                }
                ShutdownPoll::Waiting => true,
                ShutdownPoll::TimedOut(msg) => {
                    eprintln!("{msg}");
                    failed = true;
                    false
                }
            });
            if !asked.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Let the registry notice.
        let _ = run.entries();
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `xenkvm reboot DOM`.
pub fn reboot(run: &RunDir, dom: &str) -> anyhow::Result<ExitCode> {
    let (_, i) = op(run, dom, DomainOp::Reboot)?;
    eprintln!("Rebooting domain {}", i.id);
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm destroy DOM`: ask the monitor, then SIGKILL it if it lingers.
pub fn destroy(run: &RunDir, dom: &str) -> anyhow::Result<ExitCode> {
    let e = find(run, dom)?;
    if let Err(err) = client(&e).op(&e.name, DomainOp::Destroy) {
        log::warn!("destroy through the API failed ({err}); killing the monitor");
    }
    if let Some(pid) = e.pid {
        if !wait_gone(pid, Some(Duration::from_secs(10))) {
            // SAFETY: plain kill(2) on the monitor's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            if !wait_gone(pid, Some(Duration::from_secs(5))) {
                bail!("domain {} (pid {pid}) does not die", e.name);
            }
        }
    }
    if e.dir.exists() && !e.alive() {
        run.forget(&e);
    }
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm pause DOM` / `xenkvm unpause DOM`.
pub fn pause(run: &RunDir, dom: &str, paused: bool) -> anyhow::Result<ExitCode> {
    let o = if paused {
        DomainOp::Pause
    } else {
        DomainOp::Resume
    };
    op(run, dom, o)?;
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm info`: host facts as `key : value` lines, in xl's spelling
/// where xl has the same fact.
pub fn info(run: &RunDir) -> anyhow::Result<ExitCode> {
    // SAFETY: uname fills the zeroed struct.
    let uts = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        libc::uname(&mut u);
        u
    };
    let field = |f: &[libc::c_char]| -> String {
        let b: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            >> 10
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let domains = run.entries();
    let profile = match kvm_ioctls::Kvm::new() {
        Ok(kvm) => crate::host_profile::get(&kvm).map(|p| (p.name(), p.evidence.join("; "))),
        Err(e) => Err(format!("cannot open /dev/kvm: {e}")),
    };
    let (profile, why) = match profile {
        Ok((name, why)) => (name.to_string(), why),
        Err(e) => ("none".to_string(), e),
    };
    let lines: Vec<(&str, String)> = vec![
        ("host", field(&uts.nodename)),
        ("release", field(&uts.release)),
        ("version", field(&uts.version)),
        ("machine", field(&uts.machine)),
        ("nr_cpus", cpus.to_string()),
        ("total_memory", mib("MemTotal:").to_string()),
        ("free_memory", mib("MemAvailable:").to_string()),
        ("xen_major", xen_shim::abi::XEN_MAJOR.to_string()),
        ("xen_minor", xen_shim::abi::XEN_MINOR.to_string()),
        ("xen_extra", ".0-xenkvm".into()),
        (
            "xen_version",
            format!(
                "{}.{}.0-xenkvm",
                xen_shim::abi::XEN_MAJOR,
                xen_shim::abi::XEN_MINOR
            ),
        ),
        ("xen_caps", "xen-3.0-x86_64".into()),
        ("virt_caps", "pv".into()),
        ("hypervisor", "kvm (/dev/kvm)".into()),
        ("kvm_available", Path::new("/dev/kvm").exists().to_string()),
        ("seccomp", crate::seccomp::describe()),
        ("host_profile", profile),
        ("host_profile_why", why),
        ("xenkvm_version", env!("CARGO_PKG_VERSION").into()),
        ("run_dir", run.root.display().to_string()),
        ("nr_domains", domains.len().to_string()),
    ];
    for (k, v) in lines {
        println!("{k:<23}: {v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm create CFG` without -F: start a monitor in its own session (log
/// to a file), send it the domain through the API, optionally attach.
pub fn create_background(
    run: &RunDir,
    req: &CreateRequest,
    attach_console: bool,
    quiet: bool,
    verbose: u8,
) -> anyhow::Result<ExitCode> {
    let staging = run.staging();
    run.ensure(&staging)?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let token = format!("{}-{nanos}", std::process::id());
    let sock = staging.join(format!("{token}.sock"));
    let log = staging.join(format!("{token}.log"));
    let logf = super::registry::create_private(&log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the xenkvm binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--run-dir").arg(&run.root);
    for _ in 0..verbose {
        cmd.arg("-v");
    }
    cmd.arg("monitor")
        .arg("--api-socket")
        .arg(&sock)
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    // SAFETY: setsid is async-signal-safe; it detaches the monitor from our
    // terminal and process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the domain monitor")?;
    let give_up = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(&log);
        text
    };
    let mut c = Client::new(&sock);
    c.timeout = Duration::from_secs(120);
    let start = Instant::now();
    while c.version().is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            let text = give_up(&mut child);
            bail!("the domain monitor exited ({st}):\n{text}");
        }
        if start.elapsed() > Duration::from_secs(30) {
            let text = give_up(&mut child);
            bail!("the domain monitor did not start:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = match c.create(req) {
        Ok(i) => i,
        Err(e) => {
            give_up(&mut child);
            eprintln!("xenkvm: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if !quiet {
        let how = if req.paused {
            format!("created paused (`xenkvm unpause {}` runs it)", info.name)
        } else {
            "started".to_string()
        };
        eprintln!(
            "xenkvm: domain {} (id {}) {how}; log: {}",
            info.name, info.id, info.log
        );
    }
    // The monitor runs on after we exit (it is not our session any more).
    drop(child);
    if attach_console {
        return attach(
            Path::new(&info.console_socket),
            &format!("{} (id {})", info.name, info.id),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_0_by_name_or_id() {
        assert!(is_dom0("Domain-0"));
        assert!(is_dom0("0"));
        assert!(!is_dom0("1"));
        assert!(!is_dom0("domain-0"));
        let h = Host {
            mem_mib: 4096,
            cpus: 2,
            time_s: 1.5,
        };
        let j = h.json();
        assert_eq!(j["domid"], 0);
        assert_eq!(j["config"]["name"], "Domain-0");
        assert_eq!(j["info"]["vcpus"], 2);
        assert!(h.row().starts_with("Domain-0 "));
    }

    #[test]
    fn list_layout_matches_xl() {
        let row = list_row("web01", 3, 2048, 2, "-b----", 87.2);
        assert_eq!(
            row,
            "web01                                        3  2048     2     -b----      87.2"
        );
        assert_eq!(
            list_row("Domain-0", 0, 4096, 8, "r-----", 1234.5),
            "Domain-0                                     0  4096     8     r-----    1234.5"
        );
        assert_eq!(LIST_HEADER.find("ID"), Some(44));
    }
}
