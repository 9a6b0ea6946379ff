//! SIGTERM, SIGINT and SIGHUP end a guest the orderly way: the process
//! stops its guest and returns through its normal exit path, so that its
//! run-directory files, id and sockets are removed (as after a poweroff).
//!
//! The signals are blocked in every thread and taken by one thread of ours
//! with `sigwait`, so no code runs in a signal handler. A second signal
//! exits at once (what is left is swept later as a dead process's).

use std::sync::atomic::{AtomicI32, Ordering};

/// The termination signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the zeroed set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in SIGNALS {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// Take the termination signals on a thread of their own; the first calls
/// `on_signal`. Call this before starting other threads: they inherit the
/// blocked mask. (Child processes get a clean mask from `std::process`.)
pub fn handle_termination(on_signal: impl Fn(i32) + Send + 'static) {
    let s = set();
    // SAFETY: pthread_sigmask with a valid set and a null old set.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
    if r != 0 {
        log::warn!("cannot block termination signals: error {r}");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: sigwait on a valid set, writing into `sig`.
            if unsafe { libc::sigwait(&s, &mut sig) } != 0 {
                continue;
            }
            if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
                crate::console::restore();
                std::process::exit(128 + sig);
            }
            log::info!("signal {sig}: stopping");
            on_signal(sig);
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the signal thread: {e}");
        // SAFETY: as above, unblocking what we blocked.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &s, std::ptr::null_mut()) };
    }
}

/// The termination signal received so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The signal's name for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
