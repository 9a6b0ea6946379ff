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

pub struct SaveJob {
    pub path: PathBuf,
    pub asked: Instant,
    pub reply: SyncSender<Result<SaveInfo, ApiError>>,
}

/// How long a guest may take to suspend before the save is given up.
pub const SUSPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The guest has suspended: write the image and answer the request.
pub fn finish_save(job: SaveJob, config_json: &str, host: &Host, dom: &Domain) {
    let suspend_ms = job.asked.elapsed().as_millis() as u64;
    let t = Instant::now();
    let r = (|| {
        let cpu = host
            .suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| ApiError::Internal("no suspended vCPU state".into()))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&job.path)
            .map_err(|e| ApiError::BadRequest(format!("{}: {e}", job.path.display())))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let stats = super::save::write_image(&mut w, config_json, dom, &cpu)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let f = w
            .into_inner()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        f.sync_all()
            .map_err(|e| ApiError::Internal(format!("{}: {e}", job.path.display())))?;
        Ok(SaveInfo {
            path: job.path.display().to_string(),
            bytes: stats.bytes,
            pages: stats.pages,
            suspend_ms,
            write_ms: t.elapsed().as_millis() as u64,
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
        Err(e) => log::error!("save to {} failed: {e}", job.path.display()),
    }
    let _ = job.reply.send(r);
}

/// Restore `path` (an xl save file) into `vm`, which has not run yet.
pub fn restore_file(path: &std::path::Path, vm: &mut crate::vm::Vm) -> Result<(), ApiError> {
    let f = std::fs::File::open(path)
        .map_err(|e| ApiError::BadRequest(format!("{}: {e}", path.display())))?;
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
