//! A save requested through the control API, carried out by the monitor's
//! run loop once the guest has suspended.

use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use api::control::{ApiError, SaveInfo};
use xen_shim::domain::Domain;

use crate::platform::Host;

/// Where the suspended domain goes.
pub enum Dest {
    /// `save`: a file, opened (created, mode 0600) before the suspend.
    File(PathBuf, std::fs::File),
    /// `migrate`: the final round of a live migration under way.
    Live(Box<super::live::PreCopy>),
}

pub struct SaveJob {
    pub dest: Dest,
    pub asked: Instant,
    pub reply: SyncSender<Result<SaveInfo, ApiError>>,
}

/// Open (create) the file a save writes, before the guest is suspended.
pub fn open_save_file(path: &std::path::Path) -> Result<Dest, ApiError> {
    if !path.is_absolute() {
        return Err(ApiError::BadRequest(format!(
            "{}: the save file's path must be absolute",
            path.display()
        )));
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ApiError::BadRequest(format!("{}: {e}", path.display())))?;
    Ok(Dest::File(path.to_path_buf(), f))
}

/// How long a guest may take to suspend before the save is given up.
pub const SUSPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The guest has suspended and its backends have stopped. With a job,
/// write the image or send the final round, and answer the request; the
/// domain is then done here (`None`). Without one (a guest that suspended
/// after its save gave up waiting), or when the job failed, the guest
/// resumes here in a new domain built by `create` (Xen's suspend-cancel,
/// through a local restore): that domain is returned.
pub fn after_suspend(
    job: Option<SaveJob>,
    config_json: &str,
    host: &Host,
    dom: &Domain,
    create: impl FnOnce() -> Result<crate::vm::Vm, ApiError>,
) -> Option<crate::vm::Vm> {
    let cpu = host
        .suspended
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(cpu) = cpu else {
        if let Some(job) = job {
            let _ = job
                .reply
                .send(Err(ApiError::Internal("no suspended vCPU state".into())));
        }
        log::error!("suspended without a vCPU state: the domain is lost");
        return None;
    };
    // The other online vCPUs, as they stopped.
    let others = std::mem::take(
        &mut *host
            .suspended_others
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let mut cpus = vec![cpu];
    for o in others {
        match o {
            Ok(c) => cpus.push(c),
            Err(e) => {
                let msg = format!("a vCPU's state could not be kept ({e}): the domain is lost");
                eprintln!("xenkvm: {msg}");
                if let Some(job) = job {
                    let _ = job.reply.send(Err(ApiError::Internal(msg)));
                }
                return None;
            }
        }
    }
    cpus.sort_by_key(|c| c.id);
    let online = dom
        .online
        .load(std::sync::atomic::Ordering::SeqCst)
        .count_ones() as usize;
    if cpus.len() != online {
        let msg = format!(
            "{} of {online} online vCPUs' states kept: the domain is lost",
            cpus.len()
        );
        eprintln!("xenkvm: {msg}");
        if let Some(job) = job {
            let _ = job.reply.send(Err(ApiError::Internal(msg)));
        }
        return None;
    }
    if let Some(job) = job {
        let r = run_job(job.dest, job.asked, config_json, host, dom, &cpus);
        let done = r.is_ok();
        let _ = job.reply.send(r);
        if done {
            return None;
        }
    }
    eprintln!("xenkvm: the domain resumes here");
    let t = Instant::now();
    let r = create().and_then(|mut vm| {
        resume_locally(&mut vm, dom, &cpus, config_json)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(vm)
    });
    match r {
        Ok(vm) => {
            log::info!("resumed in a new domain in {} ms", t.elapsed().as_millis());
            Some(vm)
        }
        Err(e) => {
            eprintln!("xenkvm: the domain cannot resume: {e}");
            None
        }
    }
}

/// Move the suspended domain's state into `vm` (a fresh domain) through
/// the stream, as a save then a restore would, without a file.
pub fn resume_locally(
    vm: &mut crate::vm::Vm,
    dom: &Domain,
    cpus: &[super::SuspendedVcpu],
    config_json: &str,
) -> Result<(), super::MigrateError> {
    let (rd, wr) = std::io::pipe()?;
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut w = BufWriter::with_capacity(1 << 20, wr);
            super::save::write_image(&mut w, config_json, dom, cpus)
        });
        let mut r = std::io::BufReader::with_capacity(1 << 20, rd);
        let res = super::stream::read_xl_header(&mut r)
            .and_then(|_| super::restore::restore_into(&mut r, vm));
        // The writer ends (EPIPE) if the reader stopped early.
        drop(r);
        let w = writer
            .join()
            .unwrap_or_else(|_| Err(super::MigrateError::State("the writer panicked".into())));
        res.and(w.map(|_| ()))
    })
}

fn run_job(
    dest: Dest,
    asked: Instant,
    config_json: &str,
    host: &Host,
    dom: &Domain,
    cpus: &[super::SuspendedVcpu],
) -> Result<SaveInfo, ApiError> {
    let suspend_ms = asked.elapsed().as_millis() as u64;
    let t = Instant::now();
    let path = match dest {
        Dest::File(p, f) => (p, f),
        Dest::Live(pre) => return finish_live(*pre, host, dom, cpus, suspend_ms),
    };
    let (job_path, f) = path;
    let r = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let stats = super::save::write_image(&mut w, config_json, dom, cpus)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let f = w
            .into_inner()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        f.sync_all()
            .map_err(|e| ApiError::Internal(format!("{}: {e}", job_path.display())))?;
        Ok(SaveInfo {
            path: job_path.display().to_string(),
            bytes: stats.bytes,
            pages: stats.pages,
            suspend_ms,
            write_ms: t.elapsed().as_millis() as u64,
            rounds: Vec::new(),
            downtime_ms: None,
        })
    })();
    match &r {
        Ok(i) => log::info!(
            "saved to {}: {} pages, {} bytes (suspend {} ms, write {} ms)",
            i.path,
            i.pages,
            i.bytes,
            i.suspend_ms,
            i.write_ms
        ),
        Err(e) => log::error!("save to {} failed: {e}", job_path.display()),
    }
    r
}

fn finish_live(
    pre: super::live::PreCopy,
    host: &Host,
    dom: &Domain,
    cpus: &[super::SuspendedVcpu],
    suspend_ms: u64,
) -> Result<SaveInfo, ApiError> {
    let t = Instant::now();
    let log = host
        .dirty_log
        .get()
        .ok_or_else(|| ApiError::Internal("no dirty log".into()))?;
    let at = cpus.first().map_or_else(Instant::now, |c| c.at);
    let r = pre.finish(dom, log, cpus, at);
    log.stop();
    let s = r.map_err(|e| ApiError::Internal(format!("migration failed: {e}")))?;
    log::info!(
        "migrated: rounds {:?} ({} frames), downtime {} ms, total {} ms",
        s.rounds,
        s.pages,
        s.downtime_ms,
        s.total_ms
    );
    Ok(SaveInfo {
        path: String::new(),
        bytes: 0,
        pages: s.pages,
        suspend_ms,
        write_ms: t.elapsed().as_millis() as u64,
        rounds: s.rounds,
        downtime_ms: Some(s.downtime_ms),
    })
}

/// Restore `path` (an xl save file) into `vm`, which has not run yet.
pub fn restore_file(path: &std::path::Path, vm: &mut crate::vm::Vm) -> Result<(), ApiError> {
    use std::os::unix::fs::FileTypeExt;
    let open = || -> std::io::Result<Box<dyn std::io::Read>> {
        // A unix socket: a migration's stream, relayed by migrate-receive.
        if std::fs::metadata(path)?.file_type().is_socket() {
            return Ok(Box::new(std::os::unix::net::UnixStream::connect(path)?));
        }
        Ok(Box::new(std::fs::File::open(path)?))
    };
    let f = open().map_err(|e| ApiError::BadRequest(format!("{}: {e}", path.display())))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let t = Instant::now();
    super::stream::read_xl_header(&mut r)
        .and_then(|_| super::restore::restore_into(&mut r, vm))
        .map(|s| {
            log::info!(
                "restored {} pages ({} tables pinned) from {} in {} ms",
                s.pages,
                s.pinned,
                path.display(),
                t.elapsed().as_millis()
            )
        })
        .map_err(|e| ApiError::BadRequest(format!("restore from {}: {e}", path.display())))
}
