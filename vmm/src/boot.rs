//! What the guest boots: the kernel files given on the command line, or
//! the default entry of the boot loader configuration found on the guest's
//! first disk (what Xen's pygrub does).

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::control::registry::write_private;
use crate::pvdev::OpenDisk;
use crate::RunArgs;

/// Kernel, initrd and command line for the domain builder.
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Files extracted from the guest's disk, removed when dropped.
    extracted: Vec<PathBuf>,
}

impl Drop for BootFiles {
    fn drop(&mut self) {
        for f in &self.extracted {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Is `name` (a `bootloader=` value) Xen's pygrub?
fn is_pygrub(name: &str) -> bool {
    std::path::Path::new(name)
        .file_name()
        .is_some_and(|f| f == "pygrub")
}

/// `scratch` is the private directory pygrub's kernel and initrd are copied
/// to (the run's or the domain's own; they are removed with the files).
pub fn resolve(
    args: &RunArgs,
    disks: &[OpenDisk],
    scratch: &std::path::Path,
) -> anyhow::Result<BootFiles> {
    if let Some(kernel) = &args.kernel {
        return Ok(BootFiles {
            kernel: kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: args.cmdline.clone(),
            extracted: Vec::new(),
        });
    }
    let Some(bl) = &args.bootloader else {
        bail!("no kernel: give --kernel, or --bootloader pygrub with a --disk");
    };
    if !is_pygrub(bl) {
        bail!("boot loader {bl:?} is not supported (xenkvm has a built-in pygrub)");
    }
    let Some(disk) = disks.first() else {
        bail!("--bootloader pygrub needs a --disk to boot from");
    };
    let entry = devices::pygrub::load_default(&*disk.image, &args.bootloader_args);
    disk.image.release();
    let entry = entry.with_context(|| format!("pygrub on {}", disk.path.display()))?;
    eprintln!(
        "xenkvm: pygrub: booting \"{}\" from {}",
        entry.title,
        disk.path.display()
    );
    let dir = scratch;
    let mut files = BootFiles {
        kernel: dir.join("pygrub-kernel"),
        initrd: None,
        cmdline: entry.cmdline.clone(),
        extracted: Vec::new(),
    };
    let _ = std::fs::remove_file(&files.kernel);
    write_private(&files.kernel, &entry.kernel)
        .with_context(|| format!("writing {}", files.kernel.display()))?;
    files.extracted.push(files.kernel.clone());
    if let Some(initrd) = &entry.initrd {
        let p = dir.join("pygrub-initrd");
        let _ = std::fs::remove_file(&p);
        write_private(&p, initrd).with_context(|| format!("writing {}", p.display()))?;
        files.extracted.push(p.clone());
        files.initrd = Some(p);
    }
    // Settings given to xenkvm (xl's `extra`) come after the entry's own.
    if !args.cmdline.is_empty() && !files.cmdline.contains(args.cmdline.as_str()) {
        files.cmdline = format!("{} {}", files.cmdline, args.cmdline);
    }
    Ok(files)
}
