//! The filter is tried in a child process (the test binary run again for
//! one test), since it cannot be removed from a process once installed.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

const CHILD: &str = "XENKVM_SECCOMP_TEST_CHILD";

/// Run test `name` of this binary again, in a child with `CHILD` set.
fn in_child(name: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove(super::ENV)
        .output()
        .unwrap()
}

#[test]
fn the_line_for_a_blocked_call_names_it() {
    let mut buf = [0u8; 128];
    let n = super::blocked_line(libc::SYS_execve, &mut buf);
    let line = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(
        line.starts_with("xenkvm: seccomp: blocked system call 59 (execve);"),
        "{line}"
    );
    assert!(line.ends_with('\n'));
    let n = super::blocked_line(100_000, &mut buf);
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .contains(" 100000 (?)"));
}

#[test]
fn the_environment_picks_the_mode() {
    if std::env::var_os(CHILD).is_some() {
        let want = std::env::var("WANT").unwrap();
        assert_eq!(format!("{:?}", super::mode()), want);
        assert!(super::describe().starts_with(if want == "Off" { "off" } else { "on" }));
        return;
    }
    for (value, want) in [
        (None, "Trap"),
        (Some("1"), "Trap"),
        (Some("0"), "Off"),
        (Some("off"), "Off"),
        (Some("log"), "Log"),
    ] {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["seccomp::tests::the_environment_picks_the_mode", "--exact"])
            .env(CHILD, "1")
            .env("WANT", want)
            .env_remove(super::ENV);
        if let Some(v) = value {
            c.env(super::ENV, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{value:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn allowed_calls_work_under_the_filter() {
    if std::env::var_os(CHILD).is_some() {
        super::install().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
        // A thread started after the filter, a file, a unix socket pair.
        let t = std::thread::spawn(|| std::fs::read("/proc/self/stat").map(|v| v.len()));
        assert!(t.join().unwrap().unwrap() > 0);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        drop((a, b));
        eprintln!("CHILD-OK");
        return;
    }
    let out = in_child("seccomp::tests::allowed_calls_work_under_the_filter");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(err.contains("CHILD-OK"), "{err}");
}

#[test]
fn a_blocked_call_is_reported_and_aborts() {
    if std::env::var_os(CHILD).is_some() {
        super::install().unwrap();
        // SAFETY: PTRACE_TRACEME has no memory arguments; it never returns
        // under the filter.
        unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) };
        eprintln!("CHILD-NOT-STOPPED");
        return;
    }
    let out = in_child("seccomp::tests::a_blocked_call_is_reported_and_aborts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(
        err.contains("xenkvm: seccomp: blocked system call 101 (ptrace)"),
        "{err}"
    );
    assert!(!err.contains("CHILD-NOT-STOPPED"), "{err}");
}

#[test]
fn an_unlisted_ioctl_is_blocked() {
    if std::env::var_os(CHILD).is_some() {
        super::install().unwrap();
        // FIONREAD is not on the list.
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; it never returns under the filter.
        unsafe { libc::ioctl(0, libc::FIONREAD, &mut n) };
        eprintln!("CHILD-NOT-STOPPED");
        return;
    }
    let out = in_child("seccomp::tests::an_unlisted_ioctl_is_blocked");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("blocked system call 16 (ioctl)"), "{err}");
}

#[test]
fn log_mode_lets_an_unlisted_call_through() {
    if std::env::var_os(CHILD).is_some() {
        std::env::set_var(super::ENV, "log");
        super::install().unwrap();
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(0, libc::FIONREAD, &mut n) };
        eprintln!("CHILD-CONTINUED");
        return;
    }
    let out = in_child("seccomp::tests::log_mode_lets_an_unlisted_call_through");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(err.contains("CHILD-CONTINUED"), "{err}");
}

#[test]
fn fork_is_blocked_and_threads_still_start() {
    if std::env::var_os(CHILD).is_some() {
        super::install().unwrap();
        // pthread_create: clone3 gets ENOSYS, libc falls back to clone.
        assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
        eprintln!("CHILD-THREAD-OK");
        // SAFETY: fork in a child test process; it never returns here.
        let pid = unsafe { libc::fork() };
        eprintln!("CHILD-NOT-STOPPED {pid}");
        return;
    }
    let out = in_child("seccomp::tests::fork_is_blocked_and_threads_still_start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CHILD-THREAD-OK"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("blocked system call 56 (clone)"), "{err}");
}
