//! `xenkvm save DOM FILE` and `xenkvm restore FILE` (xl's verbs).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::control::client::Client;
use api::control::{CreateRequest, SaveRequest};
use api::xlcfg::DomainConfig;

use crate::control::registry::RunDir;

/// `xenkvm save DOM FILE`: the guest suspends, its monitor writes FILE
/// and the domain is gone (as with `xl save`).
pub fn save(run: &RunDir, dom: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let e = run.find(dom)?;
    let path = std::path::absolute(file).context("the save file's path")?;
    let mut c = Client::new(&e.api_socket());
    c.timeout = super::job::SUSPEND_TIMEOUT + Duration::from_secs(600);
    let info = c.save(
        &e.name,
        &SaveRequest {
            path: path.display().to_string(),
        },
    )?;
    eprintln!(
        "xenkvm: saved domain {} to {}: {} pages, {} bytes (guest suspended in {} ms, written in {} ms)",
        e.name, info.path, info.pages, info.bytes, info.suspend_ms, info.write_ms
    );
    if let Some(pid) = e.pid {
        crate::control::verbs::wait_gone(pid, Some(Duration::from_secs(30)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm restore [-p] FILE`: a new monitor loads FILE (with the
/// configuration it carries) and runs the domain on from its suspend.
pub fn restore(
    run: &RunDir,
    config_file: Option<&Path>,
    file: &Path,
    paused: bool,
    verbose: u8,
) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(file).context("the save file's path")?;
    let f = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let json = super::stream::read_xl_header(&mut std::io::BufReader::new(f))
        .with_context(|| format!("{}", path.display()))?;
    let (config, config_dir) = match config_file {
        Some(c) => match crate::create::load_file(c, &[])? {
            Ok((cfg, dir)) => (cfg, Some(dir.display().to_string())),
            Err(e) => {
                eprintln!("xenkvm: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => {
            let cfg = stream_config(&json).with_context(|| format!("{}", path.display()))?;
            // The domain is laid out with its kernel before the image is
            // loaded; a file from another host names that host's path.
            if let Some(k) = cfg.kernel.as_deref().filter(|k| !Path::new(k).exists()) {
                anyhow::bail!(
                    "{}: the saved domain's kernel {k} is not on this host; give an xl.cfg \
                     with a kernel here, as with xl: xenkvm restore CONFIG {}",
                    path.display(),
                    path.display()
                );
            }
            (cfg, None)
        }
    };
    let req = CreateRequest {
        config,
        config_dir,
        paused,
        restore: Some(path.display().to_string()),
    };
    crate::control::verbs::create_background(run, &req, false, false, verbose)
}

/// The domain configuration a stream's xl header carries: xenkvm's own
/// model, or libxl's JSON when Xen's `xl save`/`xl migrate` wrote it.
pub fn stream_config(json: &str) -> anyhow::Result<DomainConfig> {
    if api::xlcfg::libxl_json::is_libxl_json(json) {
        let (config, warnings) = api::xlcfg::libxl_json::from_libxl_json(json)
            .context("the configuration Xen's toolstack wrote")?;
        for w in warnings {
            log::info!("{w}");
        }
        return Ok(config);
    }
    serde_json::from_str(json)
        .context("the configuration in the stream is neither xenkvm's nor libxl's")
}

/// Print what a migration did.
fn report_migration(name: &str, info: &api::control::SaveInfo) {
    for (i, n) in info.rounds.iter().enumerate() {
        let what = if i + 1 == info.rounds.len() {
            "final round (guest suspended)"
        } else {
            "pre-copy round"
        };
        eprintln!("xenkvm: migrate {name}: {what} {i}: {n} frames");
    }
    eprintln!(
        "xenkvm: migrated domain {name}: {} frames sent; guest suspended in {} ms; \
         downtime (suspend to running at the receiver) {} ms",
        info.pages,
        info.suspend_ms,
        info.downtime_ms.unwrap_or(0)
    );
}

/// Copy `r` to `w` until the end of `r` or an error, with plain reads and
/// writes (std's `io::copy` may splice between sockets and pipes).
fn relay(r: &mut dyn std::io::Read, w: &mut dyn std::io::Write) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).and_then(|()| w.flush()).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Show the monitor's progress lines (its log from now on) until the flag
/// is set; the watcher polls the file and stops with it.
fn watch_progress(log: std::path::PathBuf) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::io::{BufRead, Seek};
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::File::open(&log) else {
            return;
        };
        let _ = f.seek(std::io::SeekFrom::End(0));
        let mut r = std::io::BufReader::new(f);
        let mut line = String::new();
        while !d.load(std::sync::atomic::Ordering::SeqCst) {
            match r.read_line(&mut line) {
                Ok(0) => std::thread::sleep(Duration::from_millis(100)),
                // A line still being written: read on.
                Ok(_) if !line.ends_with('\n') && line.len() < 4096 => {}
                Ok(_) => {
                    if let Some(rest) = line.strip_prefix(super::live::PROGRESS) {
                        eprint!("xenkvm: migrate {}", rest);
                    }
                    line.clear();
                }
                Err(_) => return,
            }
        }
    });
    done
}

/// A private directory for a relay socket.
fn private_dir(run: &RunDir, tag: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = run
        .root
        .join(format!("migrate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

/// `xenkvm migrate DOM HOST` (through `ssh HOST xenkvm migrate-receive`)
/// or `xenkvm migrate --socket PATH DOM` (a receiver listening there).
pub fn migrate(
    run: &RunDir,
    dom: &str,
    host: Option<&str>,
    socket: Option<&Path>,
    ssh: &str,
) -> anyhow::Result<ExitCode> {
    let e = run.find(dom)?;
    let mut c = Client::new(&e.api_socket());
    c.timeout = super::job::SUSPEND_TIMEOUT + Duration::from_secs(600);
    let name = e.name.clone();
    let watch = watch_progress(e.dir.join("log"));
    let send = |c: &Client, sock: &Path| {
        c.migrate(
            &name,
            &api::control::MigrateRequest {
                socket: sock.display().to_string(),
            },
        )
    };
    let info = match (socket, host) {
        (Some(sock), _) => send(&c, &std::path::absolute(sock)?)?,
        (None, Some(host)) => {
            // HOST goes into a shell command line: a host name, an address or
            // user@host, nothing the shell would read.
            anyhow::ensure!(
                !host.is_empty()
                    && !host.starts_with('-')
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._@:[]-".contains(c)),
                "bad host name {host:?}"
            );
            let dir = private_dir(run, "send")?;
            let sock = dir.join("stream.sock");
            let listener = std::os::unix::net::UnixListener::bind(&sock)?;
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{ssh} {host} xenkvm migrate-receive"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("cannot start the transport to the receiver")?;
            let mut to = child.stdin.take().context("transport stdin")?;
            let mut from = child.stdout.take().context("transport stdout")?;
            // The monitor connects; its stream goes to the transport and the
            // receiver's answer comes back.
            std::thread::spawn(move || {
                if let Ok((conn, _)) = listener.accept() {
                    if let Ok(mut back) = conn.try_clone() {
                        std::thread::spawn(move || {
                            relay(&mut from, &mut back);
                        });
                    }
                    let mut conn = conn;
                    relay(&mut conn, &mut to);
                }
            });
            let r = send(&c, &sock);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = child.wait();
            r?
        }
        (None, None) => anyhow::bail!("migrate needs a HOST or --socket PATH"),
    };
    watch.store(true, std::sync::atomic::Ordering::SeqCst);
    report_migration(&name, &info);
    if let Some(pid) = e.pid {
        crate::control::verbs::wait_gone(pid, Some(Duration::from_secs(30)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `xenkvm migrate-receive [--socket PATH]`: take a domain from a
/// migration stream on stdin (answers on stdout) or from the first
/// connection to PATH, and run it here.
pub fn receive(run: &RunDir, socket: Option<&Path>, verbose: u8) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let (mut input, mut back): (Box<dyn Read + Send>, Box<dyn Write>) = match socket {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            let l = std::os::unix::net::UnixListener::bind(p)
                .with_context(|| format!("{}", p.display()))?;
            eprintln!("xenkvm: migrate-receive: listening on {}", p.display());
            let (s, _) = l.accept()?;
            let _ = std::fs::remove_file(p);
            (Box::new(s.try_clone()?), Box::new(s))
        }
        None => (Box::new(std::io::stdin()), Box::new(std::io::stdout())),
    };
    // xl's header: read whole, to learn the configuration and pass it on.
    let mut head = vec![0u8; 48];
    input.read_exact(&mut head)?;
    let opt = u32::from_le_bytes(head[44..48].try_into().unwrap_or([0; 4]));
    anyhow::ensure!(opt <= 1 << 21, "migration stream: configuration too large");
    let mut rest = vec![0u8; opt as usize];
    input.read_exact(&mut rest)?;
    head.extend_from_slice(&rest);
    let json = super::stream::read_xl_header(&mut &head[..])?;
    let config = stream_config(&json)?;
    let dir = private_dir(run, "recv")?;
    let sock = dir.join("stream.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            if conn.write_all(&head).is_ok() {
                relay(&mut input, &mut conn);
            }
        }
    });
    let req = CreateRequest {
        config,
        config_dir: None,
        paused: false,
        restore: Some(sock.display().to_string()),
    };
    let r = crate::control::verbs::create_background(run, &req, false, false, verbose);
    let _ = std::fs::remove_dir_all(&dir);
    let answer = match &r {
        Ok(c) if *c == ExitCode::SUCCESS => super::live::READY.to_string(),
        Ok(_) => "error: the domain did not start here".to_string(),
        Err(e) => format!("error: {e}"),
    };
    let _ = writeln!(back, "{answer}");
    let _ = back.flush();
    r
}
