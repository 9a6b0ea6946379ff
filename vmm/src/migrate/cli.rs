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
pub fn restore(run: &RunDir, file: &Path, paused: bool, verbose: u8) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(file).context("the save file's path")?;
    let f = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let json = super::stream::read_xl_header(&mut std::io::BufReader::new(f))
        .with_context(|| format!("{}", path.display()))?;
    let config: DomainConfig = serde_json::from_str(&json).with_context(|| {
        format!(
            "{}: the configuration in the file is not xenkvm's (a libxl JSON \
             configuration from Xen is not understood yet)",
            path.display()
        )
    })?;
    let req = CreateRequest {
        config,
        config_dir: None,
        paused,
        restore: Some(path.display().to_string()),
    };
    crate::control::verbs::create_background(run, &req, false, false, verbose)
}
