//! The monitor's log, bounded: a background domain's monitor writes its log
//! (stderr, which `xenkvm create` points at a file in the run directory)
//! for the domain's whole life, and guest-triggered lines, though
//! rate-limited, would make that file grow for ever. When the file reaches
//! [`LOG_MAX`] it starts again from the beginning with a line saying so, so
//! it holds the most recent lines and never more than about [`LOG_MAX`].
//! Where stderr is not a regular file (a terminal, a pipe) nothing changes.

use std::io::Write;
use std::os::fd::RawFd;

/// The most a log file grows to.
pub const LOG_MAX: u64 = 8 << 20;

/// A writer to `fd` that restarts a regular file at `max` bytes.
pub struct BoundedLog {
    fd: RawFd,
    max: u64,
    /// Bytes in the file (None: not a regular file, no bound needed).
    size: Option<u64>,
}

impl BoundedLog {
    pub fn stderr() -> BoundedLog {
        BoundedLog::new(libc::STDERR_FILENO, LOG_MAX)
    }

    pub fn new(fd: RawFd, max: u64) -> BoundedLog {
        // SAFETY: fstat on a descriptor we were given, into a zeroed struct.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            (libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG)
                .then_some(st.st_size as u64)
        };
        BoundedLog { fd, max, size }
    }

    /// The descriptor is a regular file (the bound applies).
    pub fn is_file(&self) -> bool {
        self.size.is_some()
    }

    fn raw_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writing from a valid buffer to our descriptor.
        let n = unsafe { libc::write(self.fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Empty the file and say why (stdout shares the file and its offset).
    fn restart(&mut self) {
        // SAFETY: truncating and seeking our own descriptor.
        unsafe {
            libc::ftruncate(self.fd, 0);
            libc::lseek(self.fd, 0, libc::SEEK_SET);
        }
        let line = format!(
            "xenkvm: the log reached {} MiB and starts again here\n",
            self.max >> 20
        );
        let n = self.raw_write(line.as_bytes()).unwrap_or(0);
        self.size = Some(n as u64);
    }
}

impl Write for BoundedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(size) = self.size {
            if size.saturating_add(buf.len() as u64) > self.max {
                self.restart();
            }
        }
        let n = self.raw_write(buf)?;
        if let Some(s) = &mut self.size {
            *s = s.saturating_add(n as u64);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A guest that keeps a log line coming (rate-limited, but for ever)
    /// used to grow the background monitor's log file without bound.
    #[test]
    fn a_log_file_never_grows_past_its_bound() {
        let path = std::env::temp_dir().join(format!("xenkvm-logcap-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let mut log = BoundedLog::new(f.as_raw_fd(), 64 << 10);
        let line = [b'x'; 99];
        for i in 0..10_000 {
            log.write_all(&line).unwrap();
            log.write_all(format!(" {i}\n").as_bytes()).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.len() as u64 <= 64 << 10, "{} bytes", text.len());
        assert!(
            text.starts_with("xenkvm: the log reached"),
            "{}",
            &text[..80]
        );
        assert!(
            text.trim_end().ends_with(" 9999"),
            "the newest lines are kept"
        );
    }

    #[test]
    fn a_terminal_or_pipe_is_left_alone() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 into a two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let log = BoundedLog::new(fds[1], 10);
        assert_eq!(log.size, None);
        // SAFETY: closing the pipe we made.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
