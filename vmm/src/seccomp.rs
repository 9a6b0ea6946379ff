//! The monitor's seccomp filter: an allow-list of the system calls a
//! running domain needs (KVM, its backends, its sockets, a reboot's new
//! VM), installed on every thread of the process once the first VM is
//! built (`install`, from `Vm::run`). Threads started later inherit it.
//!
//! A system call not on the list raises SIGSYS; our handler writes one
//! line naming the call to stderr and aborts, so that a missing entry is
//! diagnosable (`xenkvm: seccomp: blocked system call 59 (execve)`).
//! `--no-seccomp` or `XENKVM_SECCOMP=0` turns the filter off (logged).
//! See docs/sandbox.md.

use std::collections::BTreeMap;
use std::sync::Mutex;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

mod ioctls;
mod syscalls;

/// The environment variable that turns the filter off (`0`/`off`); the
/// `--no-seccomp` flag sets it so that monitors started by `create` see it.
pub const ENV: &str = "XENKVM_SECCOMP";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
    #[error("installing the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// What the filter does with a system call off the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No filter (`XENKVM_SECCOMP=0`, `--no-seccomp`).
    Off,
    /// SIGSYS: one line on stderr, then abort (the default).
    Trap,
    /// Allow it, and let the kernel log it (`XENKVM_SECCOMP=log`; the
    /// lines are `audit: type=1326 ... syscall=N` in `dmesg`): for finding
    /// what the list misses without stopping the monitor.
    Log,
}

/// The mode monitors started from this environment use.
pub fn mode() -> Mode {
    match std::env::var(ENV).ok().as_deref().map(str::trim) {
        Some("0" | "off" | "no" | "false") => Mode::Off,
        Some("log") => Mode::Log,
        _ => Mode::Trap,
    }
}

/// What `xenkvm info` prints for the filter.
pub fn describe() -> String {
    match mode() {
        Mode::Trap => "on (allow-list; anything else: SIGSYS, a line on stderr, abort)".into(),
        Mode::Log => format!("on, logging only ({ENV}=log: the kernel logs what it would refuse)"),
        Mode::Off => format!("off ({ENV}=0 or --no-seccomp)"),
    }
}

/// Has the filter been installed in this process (or been declined)?
static DONE: Mutex<bool> = Mutex::new(false);

/// Install the filter on every thread of this process, once; later calls
/// (a rebooted guest's next `Vm::run`) do nothing.
pub fn install() -> Result<(), SeccompError> {
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    *done = true;
    let mode = mode();
    if mode == Mode::Off {
        log::warn!(
            "seccomp: the monitor runs WITHOUT its system-call filter ({ENV}=0 or --no-seccomp)"
        );
        return Ok(());
    }
    if mode == Mode::Log {
        log::warn!("seccomp: {ENV}=log: calls off the list are allowed and logged by the kernel");
    }
    let prog = program(mode)?;
    let no_clone3 = clone3_enosys()?;
    install_sigsys_handler()?;
    // The allow-list last: it refuses seccomp(2) itself.
    seccompiler::apply_filter_all_threads(&no_clone3)?;
    seccompiler::apply_filter_all_threads(&prog)?;
    log::info!(
        "seccomp: filter installed on all threads ({} system calls allowed)",
        syscalls::ALLOWED.len() + 3
    );
    Ok(())
}

/// The allow-list as a BPF program (`mode` Trap or Log).
pub fn program(mode: Mode) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(nr, _) in syscalls::ALLOWED {
        rules.insert(nr, Vec::new());
    }
    rules.insert(
        libc::SYS_ioctl,
        arg_in(1, ioctls::ALLOWED.iter().map(|i| i.0))?,
    );
    // clone only for threads: a new process (fork) is refused. clone3's
    // flags are in memory, out of a filter's reach: it is allowed here and
    // answered ENOSYS by `clone3_enosys`, so that libc falls back to clone.
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )?])?],
    );
    // Unix sockets (API, console, xenstore) and the AF_INET datagram socket
    // for interface ioctls (netback's taps).
    rules.insert(
        libc::SYS_socket,
        arg_in(0, [libc::AF_UNIX as u64, libc::AF_INET as u64].into_iter())?,
    );
    let filter = SeccompFilter::new(
        rules,
        if mode == Mode::Log {
            SeccompAction::Log
        } else {
            SeccompAction::Trap
        },
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// A second filter: clone3 fails with ENOSYS (everything else passes on
/// to the allow-list).
pub fn clone3_enosys() -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// Rules matching argument `arg` (its low 32 bits) equal to any of `values`.
fn arg_in(arg: u8, values: impl Iterator<Item = u64>) -> Result<Vec<SeccompRule>, SeccompError> {
    values
        .map(|v| {
            let c = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?;
            Ok(SeccompRule::new(vec![c])?)
        })
        .collect()
}

/// The name of system call `nr`, where we know it.
pub fn syscall_name(nr: i64) -> &'static str {
    syscalls::ALLOWED
        .iter()
        .chain(syscalls::NAMED)
        .find(|s| s.0 == nr)
        .map_or("?", |s| s.1)
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a handler that only formats into a stack buffer, writes it
    // with write(2) and aborts: all async-signal-safe.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One line for a blocked system call, into `buf`; returns its length.
fn blocked_line(nr: i64, buf: &mut [u8; 128]) -> usize {
    let mut n = 0;
    let mut put = |s: &[u8]| {
        for &b in s {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"xenkvm: seccomp: blocked system call ");
    let mut digits = [0u8; 20];
    let mut v = nr.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if nr < 0 {
        put(b"-");
    }
    put(&digits[i..]);
    put(b" (");
    put(syscall_name(nr).as_bytes());
    put(b"); add it to vmm/src/seccomp or run with --no-seccomp\n");
    n
}

extern "C" fn on_sigsys(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // struct siginfo for SIGSYS: three ints and padding, then _sigsys
    // { void *_call_addr; int _syscall; unsigned _arch; }.
    // SAFETY: the kernel passes a valid siginfo (SA_SIGINFO).
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() };
    let mut buf = [0u8; 128];
    let n = blocked_line(i64::from(nr), &mut buf);
    // SAFETY: write(2) from a live stack buffer, then abort(3).
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::abort();
    }
}

#[cfg(test)]
mod tests;
