//! `xenkvm create`: start a guest from an xl.cfg file, as `xl create` does.
//!
//! This first slice always runs the guest in the foreground with its console
//! on this terminal (as `xl create -F -c`); PV block and network devices and
//! PV bootloaders are not supported yet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use api::xlcfg::{self, Action, DomainConfig, DomainType};

use crate::{OnReboot, RunArgs};

#[derive(clap::Args)]
#[command(
    after_help = "Background mode is not yet implemented: the guest always runs in the \
foreground with its console on this terminal, as with -F -c (so -c is implied)."
)]
pub struct CreateArgs {
    /// Parse the config and print it as JSON; do not start the guest.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Stay in the foreground (always the case for now; background mode is not yet implemented).
    #[arg(short = 'F')]
    foreground: bool,
    /// Attach to the guest console (implied: the console is always on this terminal).
    #[arg(short = 'c')]
    console: bool,
    /// The xl.cfg file.
    cfg: PathBuf,
    /// Settings that override the file's, e.g. `memory=1024 'extra="quiet"'`.
    overrides: Vec<String>,
}

pub fn create(args: &CreateArgs) -> anyhow::Result<ExitCode> {
    let _ = (args.foreground, args.console);
    let text = std::fs::read_to_string(&args.cfg)
        .with_context(|| format!("cannot read {}", args.cfg.display()))?;
    let file = args.cfg.display().to_string();
    let (cfg, warnings) = match xlcfg::load(&text, &file, &args.overrides) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xenkvm: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    if args.dry_run {
        println!("{}", xlcfg::to_json(&cfg));
        return Ok(ExitCode::SUCCESS);
    }
    let dir = args.cfg.parent().unwrap_or(Path::new("."));
    let run_args = run_args(&cfg, dir)?;
    crate::run(&run_args)
}

/// A path from the config: relative to the config's directory when it exists
/// there, otherwise as given (relative to the current directory).
fn resolve(path: &str, dir: &Path) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_relative() {
        let in_dir = dir.join(&p);
        if in_dir.exists() {
            return in_dir;
        }
    }
    p
}

/// The `xenkvm run` arguments equivalent to `cfg`, or why it cannot run yet.
fn run_args(cfg: &DomainConfig, dir: &Path) -> anyhow::Result<RunArgs> {
    if cfg.domain_type != DomainType::Pv {
        bail!(
            "type = \"{}\" guests are not supported yet (xenkvm runs PV guests)",
            cfg.domain_type.as_str()
        );
    }
    if cfg.kernel.is_none() && cfg.bootloader.is_none() {
        bail!("firmware-booted PV guests are not supported yet; set `kernel` or `bootloader`");
    }
    let on_reboot = match cfg.on_reboot {
        Action::Destroy => OnReboot::Exit,
        Action::Restart => OnReboot::Restart,
        other => {
            eprintln!(
                "xenkvm: warning: on_reboot = \"{other}\" is not supported yet; using restart"
            );
            OnReboot::Restart
        }
    };
    Ok(RunArgs {
        kernel: cfg.kernel.as_deref().map(|k| resolve(k, dir)),
        initrd: cfg.ramdisk.as_deref().map(|r| resolve(r, dir)),
        cmdline: cfg.cmdline.clone().unwrap_or_default(),
        memory: cfg.memory_mib,
        vcpus: cfg.vcpus,
        name: cfg.name.clone(),
        xenstore_socket: None,
        stats: false,
        on_reboot,
        disks: cfg.disks.iter().map(|d| d.spec.clone()).collect(),
        nets: cfg.vifs.iter().map(|v| v.spec.clone()).collect(),
        bootloader: cfg.bootloader.clone(),
        bootloader_args: cfg.bootloader_args.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> DomainConfig {
        xlcfg::load(text, "t.cfg", &[]).unwrap().0
    }

    #[test]
    fn maps_config_to_run_args() {
        let dir = std::env::temp_dir().join(format!("xenkvm-create-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), b"").unwrap();
        let c = cfg("name = 'g'\nmemory = 512\nvcpus = 2\nkernel = 'vmlinuz'\n\
                     ramdisk = '/abs/initrd'\nextra = 'console=hvc0'\non_reboot = 'destroy'\n");
        let a = run_args(&c, &dir).unwrap();
        assert_eq!(a.kernel, Some(dir.join("vmlinuz")));
        assert_eq!(a.initrd, Some(PathBuf::from("/abs/initrd")));
        assert_eq!(a.memory, 512);
        assert_eq!(a.vcpus, 2);
        assert_eq!(a.name, "g");
        assert!(a.cmdline.contains("console=hvc0"));
        assert!(a.on_reboot == OnReboot::Exit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_relative_path_is_kept() {
        let c = cfg("name = 'g'\nkernel = 'nope/vmlinuz'\n");
        let a = run_args(&c, Path::new("/nonexistent")).unwrap();
        assert_eq!(a.kernel, Some(PathBuf::from("nope/vmlinuz")));
        assert!(a.on_reboot == OnReboot::Restart);
    }

    #[test]
    fn pygrub_needs_no_kernel() {
        let c = cfg("name = 'g'\nbootloader = 'pygrub'\ndisk = ['file:/img,xvda,w']\n");
        let a = run_args(&c, Path::new(".")).unwrap();
        assert_eq!(a.kernel, None);
        assert_eq!(a.bootloader.as_deref(), Some("pygrub"));
        assert_eq!(a.disks, vec!["file:/img,xvda,w".to_string()]);
    }
}
