//! Host-side PV boot loader: what pygrub does.
//!
//! Given the guest's first disk, find the partition whose file system holds a GRUB
//! config, pick the default (or requested) entry and read its kernel and initrd out
//! of the image. The image belongs to the guest, so everything in it is untrusted:
//! partition tables are bounds-checked, config files and kernels have size caps, and
//! the ext2/3/4 reader (`ext4-view`) is written not to panic on corrupt data.
//!
//! Search order as in pygrub: partitions (active MBR partition first, else table
//! order; GPT entries; or the whole disk), then on each ext2/3/4 file system
//! `/boot/grub/grub.cfg`, `/grub/grub.cfg`, `/boot/grub2/grub.cfg`, `/grub2/grub.cfg`,
//! `/boot/grub/menu.lst`, `/boot/grub/grub.conf`, `/grub/menu.lst`, `/grub/grub.conf`.

mod fs;
mod grub2;
mod legacy;
mod menu;
mod partition;

use ext4_view::{Ext4, Ext4Error};

use crate::disk::{DiskError, DiskImage};
use fs::{FsKind, PartView};
use menu::Menu;
use partition::Partition;

/// Config files looked for on each file system, GRUB 2 first.
const CONFIGS: &[(&str, ConfigKind)] = &[
    ("/boot/grub/grub.cfg", ConfigKind::Grub2),
    ("/grub/grub.cfg", ConfigKind::Grub2),
    ("/boot/grub2/grub.cfg", ConfigKind::Grub2),
    ("/grub2/grub.cfg", ConfigKind::Grub2),
    ("/boot/grub/menu.lst", ConfigKind::Legacy),
    ("/boot/grub/grub.conf", ConfigKind::Legacy),
    ("/grub/menu.lst", ConfigKind::Legacy),
    ("/grub/grub.conf", ConfigKind::Legacy),
];
/// Largest config file read.
const MAX_CONFIG: u64 = 4 << 20;
/// Largest kernel read.
const MAX_KERNEL: u64 = 256 << 20;
/// Largest total initrd read.
const MAX_INITRD: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConfigKind {
    Grub2,
    Legacy,
}

/// The kernel, initrd and command line of the chosen entry.
#[derive(Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    pub cmdline: String,
}

impl std::fmt::Debug for BootEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootEntry")
            .field("title", &self.title)
            .field("kernel", &format_args!("{} bytes", self.kernel.len()))
            .field(
                "initrd",
                &format_args!("{:?}", self.initrd.as_ref().map(|i| i.len())),
            )
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

/// Why no kernel could be loaded.
#[derive(thiserror::Error, Debug)]
pub enum PygrubError {
    #[error("bootloader arguments: {0}")]
    BadArgs(String),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("no partition with a grub config: {0}")]
    NoConfig(String),
    #[error("{part}: {config}: {msg}")]
    BadConfig {
        part: String,
        config: String,
        msg: String,
    },
    #[error("{part}: {config}: no menu entry matches --entry={entry} (entries: {available})")]
    EntryNotFound {
        part: String,
        config: String,
        entry: String,
        available: String,
    },
    #[error(
        "{part}: {config}: entry \"{title}\" does not boot a Linux kernel (no linux/kernel line)"
    )]
    NotLinux {
        part: String,
        config: String,
        title: String,
    },
    #[error("{part}: {what} {path} not found (entry \"{title}\"; also tried {tried})")]
    FileMissing {
        part: String,
        what: &'static str,
        path: String,
        title: String,
        tried: String,
    },
    #[error("{part}: cannot read {path}: {msg}")]
    ReadFile {
        part: String,
        path: String,
        msg: String,
    },
}

/// pygrub's `--entry`, `--kernel`, `--ramdisk` and `--args`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    entry: Option<String>,
    kernel: Option<String>,
    ramdisk: Option<String>,
    args: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, PygrubError> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let slot = match name {
                "--entry" | "-e" => &mut o.entry,
                "--kernel" => &mut o.kernel,
                "--ramdisk" => &mut o.ramdisk,
                "--args" => &mut o.args,
                // Interactive/output options of pygrub that mean nothing here.
                "-q" | "--quiet" | "-i" | "--interactive" | "-n" | "--not-really"
                | "--debug" | "--isconfig" => continue,
                "--output" | "--output-format" | "--output-directory" | "--runas" => {
                    if inline.is_none() {
                        it.next();
                    }
                    continue;
                }
                _ => {
                    return Err(PygrubError::BadArgs(format!(
                        "unknown argument {a:?} (known: --entry=N|TITLE, --kernel=PATH, --ramdisk=PATH, --args=STRING)"
                    )))
                }
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| PygrubError::BadArgs(format!("{name} needs a value")))?,
            };
            *slot = Some(value);
        }
        Ok(o)
    }
}

/// The parsers on their own, for the fuzz targets (`fuzz/`): each takes
/// hostile input and must return, never panic.
#[doc(hidden)]
pub mod fuzzing {
    use crate::disk::DiskImage;

    /// Parse `text` as a GRUB 2 `grub.cfg`; the number of entries found.
    pub fn grub_cfg(text: &str) -> Option<usize> {
        super::grub2::parse(text).ok().map(|m| m.entries.len())
    }

    /// Parse `text` as a GRUB legacy `menu.lst`; the number of entries found.
    pub fn menu_lst(text: &str) -> Option<usize> {
        super::legacy::parse(text).ok().map(|m| m.entries.len())
    }

    /// The partitions pygrub would search on `img`.
    pub fn partitions(img: &dyn DiskImage) -> Option<usize> {
        super::partition::scan(img).ok().map(|p| p.len())
    }
}

/// Finds the boot file system on `img` and loads the default entry (or the one
/// pygrub-style `args` select).
pub fn load_default(img: &dyn DiskImage, args: &[String]) -> Result<BootEntry, PygrubError> {
    let opts = Options::parse(args)?;
    let parts = partition::scan(img)?;
    let mut found = Vec::new();
    for p in &parts {
        let label = describe(p);
        let view = PartView::new(img, p.start, p.size);
        match fs::detect(&view)? {
            FsKind::Ext => match fs::with_ext4(view, |fs| boot_from(fs, p, &opts)) {
                Ok(Ok(Some(entry))) => return Ok(entry),
                Ok(Ok(None)) => found.push(match &opts.kernel {
                    Some(k) => format!("{label}: ext2/3/4 filesystem without {k}"),
                    None => format!(
                        "{label}: ext2/3/4 filesystem without a grub config \
                         (grub.cfg, menu.lst or grub.conf in /boot/grub, /grub, /boot/grub2 or /grub2)"
                    ),
                }),
                Ok(Err(e)) => return Err(e),
                Err(e) => found.push(format!("{label}: ext2/3/4 filesystem that cannot be read: {e}")),
            },
            FsKind::Other(name) => found.push(format!(
                "{label}: {name} filesystem is not supported (ext2/3/4 only)"
            )),
            FsKind::Empty => found.push(format!("{label}: empty (no filesystem)")),
            FsKind::Unknown => found.push(format!("{label}: no recognised filesystem")),
        }
    }
    if found.is_empty() {
        found.push("the partition table lists no partitions".to_string());
    }
    Err(PygrubError::NoConfig(found.join("; ")))
}

fn describe(p: &Partition) -> String {
    format!(
        "{} ({}, {} at {})",
        p.name(),
        p.kind,
        size_text(p.size),
        size_text(p.start)
    )
}

fn size_text(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} bytes")
    }
}

/// Reads a regular file of at most `limit` bytes; None if it does not exist.
fn read_file(
    fs: &Ext4,
    part: &Partition,
    path: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, PygrubError> {
    let err = |msg: String| PygrubError::ReadFile {
        part: part.name(),
        path: path.to_string(),
        msg,
    };
    let meta = match fs.metadata(path) {
        Ok(m) => m,
        Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    if meta.is_dir() {
        return Err(err("is a directory".into()));
    }
    if meta.len() > limit {
        return Err(err(format!(
            "{} bytes is more than the {limit} bytes allowed",
            meta.len()
        )));
    }
    fs.read(path).map(Some).map_err(|e| err(e.to_string()))
}

/// Paths to try for a kernel or initrd: as written, then with `/boot` removed or
/// added (the config may live on a separate /boot partition, or refer to one).
fn candidates(path: &str) -> Vec<String> {
    let p = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let other = match p.strip_prefix("/boot/") {
        Some(rest) => format!("/{rest}"),
        None => format!("/boot{p}"),
    };
    vec![p, other]
}

/// Loads a file named by the config, trying the `/boot` variants.
fn load_file(
    fs: &Ext4,
    part: &Partition,
    what: &'static str,
    path: &str,
    title: &str,
    limit: u64,
) -> Result<Vec<u8>, PygrubError> {
    let tries = candidates(path);
    for c in &tries {
        if let Some(data) = read_file(fs, part, c, limit)? {
            log::info!("pygrub: {}: {what} {c} ({} bytes)", part.name(), data.len());
            return Ok(data);
        }
    }
    Err(PygrubError::FileMissing {
        part: part.name(),
        what,
        path: path.to_string(),
        title: title.to_string(),
        tried: tries[1..].join(", "),
    })
}

/// Loads and concatenates initrds (4-byte aligned, as GRUB does).
fn load_initrds(
    fs: &Ext4,
    part: &Partition,
    paths: &[String],
    title: &str,
) -> Result<Option<Vec<u8>>, PygrubError> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for p in paths {
        let room = MAX_INITRD.saturating_sub(out.len() as u64);
        let data = load_file(fs, part, "initrd", p, title, room)?;
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(&data);
    }
    Ok(Some(out))
}

/// Tries one ext2/3/4 file system: Ok(None) when it has no config (or, with
/// `--kernel`, no such kernel).
fn boot_from(
    fs: &Ext4,
    part: &Partition,
    opts: &Options,
) -> Result<Option<BootEntry>, PygrubError> {
    if let Some(k) = &opts.kernel {
        // pygrub: an explicit kernel bypasses the menu.
        if !candidates(k)
            .iter()
            .any(|c| fs.exists(c.as_str()).unwrap_or(false))
        {
            return Ok(None);
        }
        let title = format!("--kernel={k}");
        let kernel = load_file(fs, part, "kernel", k, &title, MAX_KERNEL)?;
        let initrd = load_initrds(fs, part, opts.ramdisk.as_slice(), &title)?;
        return Ok(Some(BootEntry {
            title,
            kernel,
            initrd,
            cmdline: opts.args.clone().unwrap_or_default().trim().to_string(),
        }));
    }

    let Some((config, kind, text)) = find_config(fs, part)? else {
        return Ok(None);
    };
    let bad = |msg: String| PygrubError::BadConfig {
        part: part.name(),
        config: config.to_string(),
        msg,
    };
    let menu = match kind {
        ConfigKind::Grub2 => grub2::parse(&text),
        ConfigKind::Legacy => legacy::parse(&text),
    }
    .map_err(bad)?;
    log::info!(
        "pygrub: {}: {config}: {} entries, default {:?}",
        part.name(),
        menu.entries.len(),
        menu.default
    );
    if menu.entries.is_empty() {
        return Err(bad("no menu entries".into()));
    }
    let idx = match &opts.entry {
        Some(sel) => menu
            .find_entry_arg(sel)
            .ok_or_else(|| PygrubError::EntryNotFound {
                part: part.name(),
                config: config.to_string(),
                entry: sel.clone(),
                available: menu.listing().join("; "),
            })?,
        None => default_index(fs, part, config, &menu),
    };
    let e = &menu.entries[idx];
    let Some(kpath) = &e.kernel else {
        return Err(PygrubError::NotLinux {
            part: part.name(),
            config: config.to_string(),
            title: e.title.clone(),
        });
    };
    log::info!("pygrub: booting entry {idx} \"{}\"", e.title);
    let kernel = load_file(fs, part, "kernel", kpath, &e.title, MAX_KERNEL)?;
    let initrd = match &opts.ramdisk {
        Some(r) => load_initrds(fs, part, std::slice::from_ref(r), &e.title)?,
        None => load_initrds(fs, part, &e.initrds, &e.title)?,
    };
    let mut cmdline = e.args.clone();
    if let Some(extra) = &opts.args {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    Ok(Some(BootEntry {
        title: e.title.clone(),
        kernel,
        initrd,
        cmdline: cmdline.trim().to_string(),
    }))
}

/// The first config file present, with its text.
fn find_config(
    fs: &Ext4,
    part: &Partition,
) -> Result<Option<(&'static str, ConfigKind, String)>, PygrubError> {
    for &(path, kind) in CONFIGS {
        if let Some(data) = read_file(fs, part, path, MAX_CONFIG)? {
            log::debug!("pygrub: {}: found {path}", part.name());
            return Ok(Some((
                path,
                kind,
                String::from_utf8_lossy(&data).into_owned(),
            )));
        }
    }
    Ok(None)
}

/// The config's default entry; `saved` reads `saved_entry` from grubenv next to the
/// config. Anything that does not resolve falls back to entry 0, as GRUB does.
fn default_index(fs: &Ext4, part: &Partition, config: &str, menu: &Menu) -> usize {
    let sel = match menu.default.as_deref() {
        None => return 0,
        Some("saved") => {
            let env = config.rsplit_once('/').map(|(d, _)| format!("{d}/grubenv"));
            let saved = env
                .and_then(|p| read_file(fs, part, &p, 64 << 10).ok().flatten())
                .and_then(|d| {
                    String::from_utf8_lossy(&d)
                        .lines()
                        .find_map(|l| l.strip_prefix("saved_entry=").map(str::to_string))
                });
            match saved {
                Some(s) => s,
                None => return 0,
            }
        }
        Some(d) => d.to_string(),
    };
    menu.find(&sel).unwrap_or_else(|| {
        log::warn!("pygrub: {config}: default entry {sel:?} not found; booting entry 0");
        0
    })
}

#[cfg(test)]
mod tests;
