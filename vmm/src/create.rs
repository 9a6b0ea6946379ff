//! `xenkvm create`: start a guest from an xl.cfg file, as `xl create` does.
//!
//! By default the domain runs as its own background process (a monitor
//! started with `xenkvm monitor`, reached through the control API); `-c`
//! then attaches to its console. `-F` runs the domain in this process with
//! its console on this terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use api::control::CreateRequest;
use api::xlcfg::{self, Action, DomainConfig, DomainType};

use crate::control::registry::RunDir;
use crate::{GuestType, OnReboot, RunArgs};

/// Why a config cannot run (yet).
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("type = \"{0}\" guests are not supported yet (xenkvm runs PV and PVH guests)")]
    Type(&'static str),
    #[error("firmware-booted PV guests are not supported yet; set `kernel` or `bootloader`")]
    NoKernel,
}

#[derive(clap::Args)]
#[command(
    after_help = "Without -F the domain runs in the background: see `xenkvm list`, \
`xenkvm console NAME`, `xenkvm shutdown NAME`. With -F it runs in this process, with its \
console on this terminal (Ctrl-] stops it)."
)]
pub struct CreateArgs {
    /// Check the config as create would (same parse, same paths, same
    /// refusals) and print it as JSON; do not start the guest.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Stay in the foreground until the domain dies, console on this terminal.
    #[arg(short = 'F')]
    foreground: bool,
    /// Attach to the guest console once the domain is started (Ctrl-] detaches).
    #[arg(short = 'c')]
    console: bool,
    /// Leave the domain paused once it is built; `xenkvm unpause` runs it.
    #[arg(short = 'p')]
    paused: bool,
    /// Quiet: print nothing but errors and warnings.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The xl.cfg file.
    cfg: PathBuf,
    /// Settings that override the file's, e.g. `memory=1024 'extra="quiet"'`.
    overrides: Vec<String>,
}

/// The config of `args`, parsed, checked against this host and with its
/// paths resolved: what both `create` and `create -n` use.
fn load(args: &CreateArgs) -> anyhow::Result<Result<(DomainConfig, PathBuf), String>> {
    load_file(&args.cfg, &args.overrides)
}

/// The xl.cfg file `path` with `overrides`, as [`load`] reads it (also
/// `restore CONFIG FILE`'s configuration).
pub fn load_file(
    path: &Path,
    overrides: &[String],
) -> anyhow::Result<Result<(DomainConfig, PathBuf), String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path.display().to_string();
    let limits = crate::memory::limits();
    let (mut cfg, warnings) = match xlcfg::load_checked(&text, &file, overrides, &limits) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e.to_string())),
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // Refuse what cannot run before starting anything.
    if let Err(e) = run_args(&cfg, &dir) {
        return Ok(Err(e.to_string()));
    }
    resolve_paths(&mut cfg, &dir);
    Ok(Ok((cfg, dir)))
}

pub fn create(args: &CreateArgs, run: &RunDir, verbose: u8) -> anyhow::Result<ExitCode> {
    if !args.quiet && !args.dry_run {
        eprintln!("Parsing config from {}", args.cfg.display());
    }
    let (cfg, dir) = match load(args)? {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xenkvm: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if args.dry_run {
        println!("{}", xlcfg::to_json(&cfg));
        return Ok(ExitCode::SUCCESS);
    }
    let req = CreateRequest {
        config: cfg,
        config_dir: Some(dir.display().to_string()),
        paused: args.paused,
        restore: None,
    };
    if args.foreground {
        return match crate::control::monitor::run_foreground(run.clone(), req) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("xenkvm: {e}");
                Ok(ExitCode::from(1))
            }
        };
    }
    crate::control::verbs::create_background(run, &req, args.console, args.quiet, verbose)
}

/// Make the config's paths the ones create uses: `kernel` and `ramdisk`
/// next to the config file when they exist there, disk images too (where
/// xl would have made a relative target `/dev/PATH`).
fn resolve_paths(cfg: &mut DomainConfig, dir: &Path) {
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
    if let Some(k) = &cfg.kernel {
        cfg.kernel = Some(abs(resolve(k, dir)));
    }
    if let Some(r) = &cfg.ramdisk {
        cfg.ramdisk = Some(abs(resolve(r, dir)));
    }
    for d in &mut cfg.disks {
        d.target = d.target.as_deref().map(|t| disk_target(t, dir));
    }
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

/// A disk target, its image looked up next to the config file when a
/// relative path was given (xl would have made it `/dev/PATH`).
fn disk_target(target: &str, dir: &Path) -> String {
    if let Some(rel) = target.strip_prefix("/dev/") {
        let in_dir = dir.join(rel);
        if !Path::new(target).exists() && in_dir.exists() {
            let abs = std::path::absolute(&in_dir).unwrap_or(in_dir);
            return abs.display().to_string();
        }
    }
    target.to_string()
}

/// A disk as a `--disk` spec.
fn disk_arg(d: &api::xlcfg::DiskSpec, dir: &Path) -> String {
    let target = disk_target(d.target.as_deref().unwrap_or_default(), dir);
    use api::xlcfg::{Access, DiskFormat};
    let format = match d.format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow => "qcow",
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Vhd => "vhd",
        DiskFormat::Qed => "qed",
        DiskFormat::Empty => "empty",
    };
    let access = if d.access == Access::Ro { "ro" } else { "rw" };
    let mut s = format!("format={format},vdev={},access={access}", d.vdev);
    if d.devtype == api::xlcfg::DevType::Cdrom {
        s.push_str(",devtype=cdrom");
    }
    if let Some(sc) = &d.script {
        s.push_str(&format!(",script={sc}"));
    }
    if let Some(b) = &d.backend {
        s.push_str(&format!(",backend={b}"));
    }
    if d.backendtype == Some(api::xlcfg::BackendType::VhostUser) {
        s.push_str(",backendtype=vhost-user");
    }
    format!("{s},target={target}")
}

/// The `xenkvm run` arguments equivalent to `cfg`, or why it cannot run yet.
/// (The monitor applies `on_reboot` and the other actions itself; `on_reboot`
/// here is what a plain `run` would do.)
pub fn run_args(cfg: &DomainConfig, dir: &Path) -> Result<RunArgs, CreateError> {
    let guest_type = match cfg.domain_type {
        DomainType::Pv => GuestType::Pv,
        DomainType::Pvh => GuestType::Pvh,
        DomainType::Hvm => return Err(CreateError::Type(cfg.domain_type.as_str())),
    };
    if cfg.kernel.is_none() && cfg.bootloader.is_none() {
        return Err(CreateError::NoKernel);
    }
    let on_reboot = match cfg.on_reboot {
        Action::Destroy | Action::Preserve | Action::CoredumpDestroy => OnReboot::Exit,
        _ => OnReboot::Restart,
    };
    Ok(RunArgs {
        kernel: cfg.kernel.as_deref().map(|k| resolve(k, dir)),
        initrd: cfg.ramdisk.as_deref().map(|r| resolve(r, dir)),
        cmdline: cfg.cmdline.clone().unwrap_or_default(),
        memory: cfg.memory_mib,
        maxmem: Some(cfg.maxmem_mib.max(cfg.memory_mib)),
        vcpus: cfg.vcpus,
        name: cfg.name.clone(),
        xenstore_socket: None,
        stats: false,
        on_reboot,
        disks: cfg.disks.iter().map(|d| disk_arg(d, dir)).collect(),
        nets: cfg.vifs.iter().map(|v| v.spec.clone()).collect(),
        bootloader: cfg.bootloader.clone(),
        bootloader_args: cfg.bootloader_args.clone(),
        domid: None,
        guest_type,
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
        std::fs::write(dir.join("root.qcow2"), b"").unwrap();
        let c = cfg("name = 'g'\nmemory = 512\nvcpus = 2\nkernel = 'vmlinuz'\n\
                     ramdisk = '/abs/initrd'\nextra = 'console=hvc0'\non_reboot = 'destroy'\n\
                     disk = ['root.qcow2,qcow2,xvda,w', 'phy:sdz9,xvdb,r']\n");
        let a = run_args(&c, &dir).unwrap();
        // A relative image next to the config; xl's /dev/ for the rest.
        let root = dir.join("root.qcow2").display().to_string();
        assert_eq!(
            a.disks,
            vec![
                format!("format=qcow2,vdev=xvda,access=rw,target={root}"),
                "format=raw,vdev=xvdb,access=ro,target=/dev/sdz9".to_string()
            ]
        );
        assert_eq!(a.kernel, Some(dir.join("vmlinuz")));
        assert_eq!(a.initrd, Some(PathBuf::from("/abs/initrd")));
        assert_eq!(a.memory, 512);
        assert_eq!(a.vcpus, 2);
        assert_eq!(a.name, "g");
        assert!(a.cmdline.contains("console=hvc0"));
        assert!(a.on_reboot == OnReboot::Exit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 17: what `create -n` shows is what create runs.
    #[test]
    fn resolved_paths_are_what_create_runs() {
        let dir = std::env::temp_dir().join(format!("xenkvm-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), b"").unwrap();
        std::fs::write(dir.join("web02.img"), b"").unwrap();
        let mut c = cfg("name = 'g'\nkernel = 'vmlinuz'\n\
                         disk = ['file:web02.img,xvda,w', 'phy:sdz9,xvdb,r']\n");
        let before = run_args(&c, &dir).unwrap();
        resolve_paths(&mut c, &dir);
        let img = dir.join("web02.img").display().to_string();
        assert_eq!(c.kernel, Some(dir.join("vmlinuz").display().to_string()));
        assert_eq!(c.disks[0].target.as_deref(), Some(img.as_str()));
        assert_eq!(c.disks[1].target.as_deref(), Some("/dev/sdz9"));
        let after = run_args(&c, &dir).unwrap();
        assert_eq!(before.disks, after.disks);
        assert_eq!(before.kernel, after.kernel);
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
    fn a_vhost_user_disk_keeps_its_backendtype() {
        let c = cfg("name = 'g'\nbootloader = 'pygrub'\n\
                     disk = ['vdev=xvda, backendtype=vhost-user, target=/run/b.sock']\n");
        let a = run_args(&c, Path::new(".")).unwrap();
        assert_eq!(
            a.disks,
            vec![
                "format=raw,vdev=xvda,access=rw,backendtype=vhost-user,target=/run/b.sock"
                    .to_string()
            ]
        );
    }

    #[test]
    fn pygrub_needs_no_kernel() {
        let c = cfg("name = 'g'\nbootloader = 'pygrub'\ndisk = ['file:/img,xvda,w']\n");
        let a = run_args(&c, Path::new(".")).unwrap();
        assert_eq!(a.kernel, None);
        assert_eq!(a.bootloader.as_deref(), Some("pygrub"));
        assert_eq!(
            a.disks,
            vec!["format=raw,vdev=xvda,access=rw,target=/img".to_string()]
        );
    }
}
