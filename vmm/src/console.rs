//! The terminal side of the PV console: raw mode while a guest runs, stdin
//! bytes into the console ring's `in[]`, and the Ctrl-] escape.

use std::io::Read;
use std::sync::{Arc, Mutex, Weak};

use xen_shim::domain::Domain;

use crate::platform::Host;

/// Ctrl-]: the escape that stops the monitor (as xl console uses to detach).
pub const ESCAPE: u8 = 0x1d;

static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Put stdin in raw mode if it is a terminal; restored by [`restore`].
pub fn raw_mode() {
    // SAFETY: plain termios calls on fd 0 with a zeroed struct filled by tcgetattr.
    unsafe {
        if libc::isatty(0) != 1 {
            return;
        }
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return;
        }
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        let mut raw = t;
        libc::cfmakeraw(&mut raw);
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        libc::tcsetattr(0, libc::TCSANOW, &raw);
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        prev(info);
    }));
}

/// Restore the terminal (safe to call more than once).
pub fn restore() {
    if let Some(t) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: restoring the attributes saved by raw_mode.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }
}

/// Copy guest-bound bytes into the console ring's input buffer.
pub fn push_input(dom: &Domain, data: &[u8]) -> usize {
    let gpa = dom.layout.console_mfn << 12;
    let mem = &*dom.mem;
    let (Ok(cons), Ok(prod)) = (mem.read_u32(gpa + 0xc00), mem.read_u32(gpa + 0xc04)) else {
        return 0;
    };
    let used = prod.wrapping_sub(cons);
    if used > 1024 {
        return 0;
    }
    let n = (1024 - used as usize).min(data.len());
    for (i, b) in data[..n].iter().enumerate() {
        let idx = u64::from(prod.wrapping_add(i as u32) & 1023);
        let _ = mem.write_u8(gpa + idx, *b);
    }
    let _ = mem.write_u32(gpa + 0xc04, prod.wrapping_add(n as u32));
    dom.raise_port(dom.layout.console_port);
    n
}

/// The guest the terminal is attached to (changes when it reboots).
#[derive(Clone, Default)]
pub struct Current(Arc<Mutex<Option<Attached>>>);

type Attached = (Arc<Host>, Weak<Domain>);

impl Current {
    pub fn set(&self, host: &Arc<Host>, dom: &Arc<Domain>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((host.clone(), Arc::downgrade(dom)));
    }
    pub fn get(&self) -> Option<(Arc<Host>, Arc<Domain>)> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (h, d) = g.as_ref()?;
        Some((h.clone(), d.upgrade()?))
    }
}

/// Forward stdin to the guest until EOF or the escape key.
pub fn spawn_input(current: Current) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let data = &buf[..n];
            let (data, escape) = match data.iter().position(|&b| b == ESCAPE) {
                Some(p) => (&data[..p], true),
                None => (data, false),
            };
            let Some((host, d)) = current.get() else {
                continue;
            };
            let mut rest = data;
            while !rest.is_empty() {
                let k = push_input(&d, rest);
                rest = &rest[k..];
                if k == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            if escape {
                host.escaped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                host.stop_all();
                return;
            }
        }
    });
}
