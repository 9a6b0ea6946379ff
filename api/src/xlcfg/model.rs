//! The domain config model and its construction from xl.cfg settings.
//!
//! Keys read into [`DomainConfig`]: `name`, `uuid`, `type`, `builder`,
//! `memory`, `maxmem`, `vcpus`, `maxvcpus`, `kernel`, `ramdisk`,
//! `cmdline`, `root`, `extra`, `firmware`, `bootloader`,
//! `bootloader_args`, `disk`, `vif`, `on_poweroff`, `on_reboot`,
//! `on_crash`, `on_watchdog`, `on_soft_reset`, `serial`, `vnc`, `sdl`.
//!
//! Every other key xl.cfg(5) documents (see [`XL_IGNORED_KEYS`]: `cpus`,
//! `pci`, `vfb`, `channel`, `boot`, `viridian`, `device_model_*`, ...)
//! is accepted and ignored with a [`WarningKind::Ignored`] warning; keys
//! unknown to xl produce a [`WarningKind::UnknownKey`] warning, with a
//! suggestion when the key looks like a typo of a known one.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::lexer::parse_number;
use super::{DiskSpec, RawConfig, Setting, ValueKind, VifSpec, XlCfgError};

/// The guest type (`type=`; deprecated `builder=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    #[default]
    Pv,
    Pvh,
    Hvm,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Pv => "pv",
            DomainType::Pvh => "pvh",
            DomainType::Hvm => "hvm",
        }
    }
}

/// What to do when the guest powers off, reboots, crashes, trips its
/// watchdog or asks for a soft reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Destroy,
    Restart,
    RenameRestart,
    Preserve,
    CoredumpDestroy,
    CoredumpRestart,
    SoftReset,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Destroy,
        Action::Restart,
        Action::RenameRestart,
        Action::Preserve,
        Action::CoredumpDestroy,
        Action::CoredumpRestart,
        Action::SoftReset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::RenameRestart => "rename-restart",
            Action::Preserve => "preserve",
            Action::CoredumpDestroy => "coredump-destroy",
            Action::CoredumpRestart => "coredump-restart",
            Action::SoftReset => "soft-reset",
        }
    }

    /// The xl spelling (exact, as xl compares it).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one domain configuration model, built from an xl.cfg file (plus
/// overrides) by [`DomainConfig::from_raw`], or directly by `xenkvm run`.
/// JSON field names are listed in the [module docs](super).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    pub name: String,
    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case; None = random.
    pub uuid: Option<String>,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    /// Initial memory (balloon target), MiB.
    pub memory_mib: u64,
    /// Maximum memory, MiB (>= memory_mib).
    pub maxmem_mib: u64,
    /// vCPUs online at boot (>= 1).
    pub vcpus: u32,
    /// vCPUs the guest may bring online (>= vcpus).
    pub maxvcpus: u32,
    /// Host path of the kernel for direct boot.
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    /// Kernel command line (`cmdline`, or built from `root` and `extra`).
    pub cmdline: Option<String>,
    /// PV/PVH: `pvgrub32` or `pvgrub64`; HVM: `bios`, `uefi`, `seabios`,
    /// `ovmf`, `rombios` or a path, as written.
    pub firmware: Option<String>,
    /// Host-side boot loader, e.g. `pygrub`.
    pub bootloader: Option<String>,
    pub bootloader_args: Vec<String>,
    pub disks: Vec<DiskSpec>,
    pub vifs: Vec<VifSpec>,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    pub on_watchdog: Action,
    pub on_soft_reset: Action,
    /// `serial` (HVM, QEMU `-serial` syntax), as a list.
    pub serial: Vec<String>,
    /// Accepted for compatibility; xenkvm has no graphical console.
    pub vnc: Option<bool>,
    /// Accepted for compatibility; xenkvm has no graphical console.
    pub sdl: Option<bool>,
}

impl Default for DomainConfig {
    /// xl's defaults, with an empty name.
    fn default() -> Self {
        DomainConfig {
            name: String::new(),
            uuid: None,
            domain_type: DomainType::Pv,
            memory_mib: 32,
            maxmem_mib: 32,
            vcpus: 1,
            maxvcpus: 1,
            kernel: None,
            ramdisk: None,
            cmdline: None,
            firmware: None,
            bootloader: None,
            bootloader_args: Vec::new(),
            disks: Vec::new(),
            vifs: Vec::new(),
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Destroy,
            on_watchdog: Action::Destroy,
            on_soft_reset: Action::SoftReset,
            serial: Vec::new(),
            vnc: None,
            sdl: None,
        }
    }
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// A key xl does not know (xl silently ignores it).
    UnknownKey,
    /// A key (or part of a spec) xl knows but xenkvm does not use.
    Ignored,
    /// A deprecated spelling that still works.
    Deprecated,
    /// A value xl silently corrects, e.g. `vcpus = 0`.
    Adjusted,
    /// A key set twice in the file; the later value wins.
    Duplicate,
}

/// A non-fatal remark about a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub file: String,
    pub line: u32,
    pub key: String,
    pub kind: WarningKind,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: warning: {}: {}",
            self.file, self.line, self.key, self.message
        )
    }
}

/// Keys read into [`DomainConfig`].
pub const MODELED_KEYS: &[&str] = &[
    "name",
    "uuid",
    "type",
    "builder",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "kernel",
    "ramdisk",
    "cmdline",
    "root",
    "extra",
    "firmware",
    "bootloader",
    "bootloader_args",
    "disk",
    "vif",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_watchdog",
    "on_soft_reset",
    "serial",
    "vnc",
    "sdl",
];

/// Keys xl reads (xen 4.17 to 4.22 `tools/xl/xl_parse.c`) that xenkvm
/// accepts and ignores.
pub const XL_IGNORED_KEYS: &[&str] = &[
    "acpi",
    "acpi_firmware",
    "acpi_laptop_slate",
    "acpi_s3",
    "acpi_s4",
    "altp2m",
    "altp2m_count",
    "altp2mhvm",
    "apic",
    "arm_sci",
    "bios",
    "bios_path_override",
    "boot",
    "bootloader_restrict",
    "bootloader_user",
    "cap",
    "channel",
    "claim_mode",
    "cpu_weight",
    "cpuid",
    "cpus",
    "cpus_soft",
    "device_model",
    "device_model_args",
    "device_model_args_hvm",
    "device_model_args_pv",
    "device_model_override",
    "device_model_stubdomain_override",
    "device_model_stubdomain_seclabel",
    "device_model_user",
    "device_model_version",
    "device_tree",
    "display",
    "dm_restrict",
    "driver_domain",
    "dtdev",
    "e820_host",
    "extratime",
    "firmware_override",
    "gfx_passthru",
    "gic_version",
    "hap",
    "hdtype",
    "hpet",
    "hvm_pirq",
    "init_seclabel",
    "iomem",
    "ioports",
    "irqs",
    "keymap",
    "latency",
    "llc_colors",
    "localtime",
    "max_event_channels",
    "max_grant_frames",
    "max_grant_version",
    "max_maptrack_frames",
    "mca_caps",
    "mmio_hole",
    "ms_vm_genid",
    "msr_relaxed",
    "nestedhvm",
    "nographic",
    "nomigrate",
    "nr_spis",
    "nx",
    "oos",
    "opengl",
    "p9",
    "pae",
    "passthrough",
    "pci",
    "pci_msitranslate",
    "pci_permissive",
    "pci_power_mgmt",
    "pci_seize",
    "period",
    "pool",
    "pvcalls",
    "pvshim",
    "pvshim_cmdline",
    "pvshim_extra",
    "pvshim_path",
    "rdm",
    "rdm_mem_boundary",
    "rtc_timeoffset",
    "seclabel",
    "shadow_memory",
    "slice",
    "smbios",
    "smbios_firmware",
    "soundhw",
    "spice",
    "spice_clipboard_sharing",
    "spice_image_compression",
    "spice_streaming_video",
    "spiceagent_mouse",
    "spicedisable_ticketing",
    "spicehost",
    "spicepasswd",
    "spiceport",
    "spicetls_port",
    "spiceusbredirection",
    "spicevdagent",
    "stdvga",
    "stubdomain_cmdline",
    "stubdomain_kernel",
    "stubdomain_memory",
    "stubdomain_ramdisk",
    "sve",
    "tee",
    "timer_mode",
    "trap_unmapped_accesses",
    "tsc_mode",
    "usb",
    "usbctrl",
    "usbdev",
    "usbdevice",
    "usbversion",
    "vdispl",
    "vendor_device",
    "vfb",
    "vga",
    "videoram",
    "vif2",
    "viridian",
    "virtio",
    "vkb",
    "vkb_device",
    "vmtrace_buf_kb",
    "vncdisplay",
    "vnclisten",
    "vncpasswd",
    "vncunused",
    "vncviewer",
    "vnuma",
    "vpmu",
    "vpt_align",
    "vsnd",
    "vtpm",
    "vuart",
    "xauthority",
    "xen_platform_pci",
    "xen_platform_pci_bar_uc",
    "xend_suspend_evtchn_compat",
    "xenstore_feature_mask",
    "xenstore_quota",
];

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A known key that `key` is probably a typo of.
fn suggest(key: &str) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase().replace('-', "_");
    let known = MODELED_KEYS.iter().chain(XL_IGNORED_KEYS).copied();
    known
        .map(|k| {
            (
                if k == lower {
                    0
                } else {
                    edit_distance(&lower, k)
                },
                k,
            )
        })
        .filter(|&(d, k)| {
            d == 0 || (d <= 2 && k.len() > 3 && key.len() > 3) || (d == 1 && k.len() > 2)
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// List items as strings, each with its line.
type Items = Vec<(String, u32)>;

/// Reads typed values out of a [`RawConfig`].
struct Reader<'a> {
    raw: &'a RawConfig,
    warnings: Vec<Warning>,
}

impl<'a> Reader<'a> {
    fn get(&self, key: &str) -> Option<&'a Setting> {
        self.raw.get(key)
    }

    fn bad(s: &Setting, line: u32, msg: impl Into<String>) -> XlCfgError {
        XlCfgError::BadValue {
            file: s.file.clone(),
            line,
            key: s.key.clone(),
            msg: msg.into(),
        }
    }

    fn warn(&mut self, s: &Setting, line: u32, kind: WarningKind, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: s.file.clone(),
            line,
            key: s.key.clone(),
            kind,
            message: message.into(),
        });
    }

    /// A string (or number, as written); empty strings count as unset.
    fn string(&self, key: &str) -> Result<Option<(String, &'a Setting)>, XlCfgError> {
        let Some(s) = self.get(key) else {
            return Ok(None);
        };
        match s.value.as_atom() {
            Some("") => Ok(None),
            Some(a) => Ok(Some((a.to_string(), s))),
            None => Err(Self::bad(s, s.line, "expected a single value, got a list")),
        }
    }

    fn int(&self, key: &str) -> Result<Option<(i64, &'a Setting)>, XlCfgError> {
        let Some(s) = self.get(key) else {
            return Ok(None);
        };
        let v = match &s.value.kind {
            ValueKind::Number(_, v) => Some(*v),
            ValueKind::String(t) => parse_number(t),
            ValueKind::List(_) => None,
        };
        match v {
            Some(v) => Ok(Some((v, s))),
            None => Err(Self::bad(
                s,
                s.line,
                format!("expected an integer, got {}", s.value.describe()),
            )),
        }
    }

    /// An integer in `min..=max`.
    fn bounded(
        &self,
        key: &str,
        min: i64,
        max: i64,
        what: &str,
    ) -> Result<Option<(i64, &'a Setting)>, XlCfgError> {
        match self.int(key)? {
            Some((v, s)) if v < min || v > max => Err(Self::bad(
                s,
                s.line,
                format!("{v} is out of range ({what} from {min} to {max})"),
            )),
            other => Ok(other),
        }
    }

    /// A memory size in MiB (`512`, `512M`, `1G`, see [`super::size`]),
    /// from 1 MiB to [`MAX_MIB`].
    fn mib(&self, key: &str) -> Result<Option<(u64, &'a Setting)>, XlCfgError> {
        let Some(s) = self.get(key) else {
            return Ok(None);
        };
        let v = match &s.value.kind {
            ValueKind::Number(_, v) if *v < 0 => {
                return Err(Self::bad(s, s.line, format!("{v} is not a memory size")))
            }
            ValueKind::Number(_, v) => *v as u64,
            ValueKind::String(t) => match parse_number(t) {
                Some(v) if v >= 0 => v as u64,
                _ => super::size::parse_mib(t).map_err(|e| Self::bad(s, s.line, e.to_string()))?,
            },
            ValueKind::List(_) => {
                return Err(Self::bad(
                    s,
                    s.line,
                    "expected a size such as 512 (MiB), 512M or 1G, got a list",
                ))
            }
        };
        if v == 0 {
            return Err(Self::bad(s, s.line, "0 MiB: a domain needs memory"));
        }
        if v > MAX_MIB as u64 {
            return Err(Self::bad(
                s,
                s.line,
                format!("{} is too large", s.value.describe()),
            ));
        }
        Ok(Some((v, s)))
    }

    /// xl's "defbool": an integer, 0 = false.
    fn boolean(&self, key: &str) -> Result<Option<bool>, XlCfgError> {
        Ok(self.int(key)?.map(|(v, _)| v != 0))
    }

    /// A list of string atoms, each with its line.
    fn list(&self, key: &str) -> Result<Option<(Items, &'a Setting)>, XlCfgError> {
        let Some(s) = self.get(key) else {
            return Ok(None);
        };
        let ValueKind::List(items) = &s.value.kind else {
            return Err(Self::bad(
                s,
                s.line,
                format!("expected a list like [ '...' ], got {}", s.value.describe()),
            ));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_atom() {
                Some(a) => out.push((a.to_string(), item.line)),
                None => {
                    return Err(Self::bad(
                        s,
                        item.line,
                        format!("item {} is a list; expected a string", i + 1),
                    ))
                }
            }
        }
        Ok(Some((out, s)))
    }

    /// A list of strings, or a single string taken as a one-item list.
    fn string_or_list(&self, key: &str) -> Result<Option<(Items, &'a Setting)>, XlCfgError> {
        match self.get(key) {
            Some(s) if !matches!(s.value.kind, ValueKind::List(_)) => {
                Ok(self.string(key)?.map(|(v, s)| (vec![(v, s.line)], s)))
            }
            _ => self.list(key),
        }
    }

    fn action(&self, key: &str, default: Action) -> Result<Action, XlCfgError> {
        let Some(s) = self.get(key) else {
            return Ok(default);
        };
        let text = s.value.as_atom().unwrap_or("");
        Action::parse(text).ok_or_else(|| {
            let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            Self::bad(
                s,
                s.line,
                format!(
                    "unknown action {} (expected one of {})",
                    s.value.describe(),
                    all.join(", ")
                ),
            )
        })
    }

    fn missing(&self, key: &str, msg: &str) -> XlCfgError {
        XlCfgError::Missing {
            file: self.raw.file.clone(),
            line: self.raw.end_line,
            key: key.to_string(),
            msg: msg.to_string(),
        }
    }

    /// Warnings about keys that are not read, or set twice.
    fn check_keys(&mut self) {
        let raw = self.raw;
        for (i, s) in raw.settings.iter().enumerate() {
            let earlier = raw.settings[..i]
                .iter()
                .rev()
                .find(|e| e.key == s.key && e.file == s.file && e.file != super::OVERRIDE_FILE);
            if let (Some(e), super::Op::Assign) = (earlier, s.op) {
                self.warn(
                    s,
                    s.line,
                    WarningKind::Duplicate,
                    format!("set again; the value at line {} is replaced", e.line),
                );
            }
        }
        for s in raw.effective() {
            let key = s.key.as_str();
            if MODELED_KEYS.contains(&key) {
                continue;
            }
            if XL_IGNORED_KEYS.contains(&key) {
                self.warn(
                    s,
                    s.line,
                    WarningKind::Ignored,
                    "not used by xenkvm; ignored",
                );
            } else {
                let hint = match suggest(key) {
                    Some(k) => format!(" (did you mean `{k}`?)"),
                    None => String::new(),
                };
                self.warn(
                    s,
                    s.line,
                    WarningKind::UnknownKey,
                    format!("unknown key; ignored{hint}"),
                );
            }
        }
    }

    fn domain_type(&self) -> Result<DomainType, XlCfgError> {
        // Matched by prefix, in xl's order: "p" is pv, "h" is hvm.
        let by_type = match self.string("type")? {
            None => None,
            Some((t, s)) => Some((
                if "hvm".starts_with(t.as_str()) {
                    DomainType::Hvm
                } else if "pv".starts_with(t.as_str()) {
                    DomainType::Pv
                } else if "pvh".starts_with(t.as_str()) {
                    DomainType::Pvh
                } else {
                    return Err(Self::bad(
                        s,
                        s.line,
                        format!(
                            "unknown domain type {} (expected pv, pvh or hvm)",
                            s.value.describe()
                        ),
                    ));
                },
                s,
            )),
        };
        let Some((b, bs)) = self.string("builder")? else {
            return Ok(by_type.map_or(DomainType::Pv, |(t, _)| t));
        };
        let by_builder = if "hvm".starts_with(b.as_str()) {
            DomainType::Hvm
        } else if "generic".starts_with(b.as_str()) {
            DomainType::Pv
        } else {
            return Err(Self::bad(
                bs,
                bs.line,
                format!(
                    "unknown builder {} (expected generic or hvm)",
                    bs.value.describe()
                ),
            ));
        };
        match by_type {
            Some((t, ts)) if t != by_builder => Err(Self::bad(
                bs,
                bs.line,
                format!(
                    "builder {} contradicts type = {} at line {}",
                    bs.value.describe(),
                    t.as_str(),
                    ts.line
                ),
            )),
            _ => Ok(by_builder),
        }
    }
}

/// Memory sizes are MiB; keep KiB within i64 as libxl does.
const MAX_MIB: i64 = i64::MAX / 1024;

impl DomainConfig {
    /// Interprets the settings of `raw`. Bad values of known keys fail
    /// with an error naming file, line and key; unknown or ignored keys
    /// produce warnings (in file order, overrides last).
    pub fn from_raw(raw: &RawConfig) -> Result<(DomainConfig, Vec<Warning>), XlCfgError> {
        let mut r = Reader {
            raw,
            warnings: Vec::new(),
        };
        r.check_keys();

        let domain_type = r.domain_type()?;

        let name = match r.string("name")? {
            Some((n, _)) => n,
            None => return Err(r.missing("name", "missing; every domain needs a name")),
        };

        let uuid = match r.string("uuid")? {
            None => None,
            Some((u, _)) if is_uuid(&u) => Some(u.to_ascii_lowercase()),
            Some((_, s)) => {
                return Err(Reader::bad(
                    s,
                    s.line,
                    format!(
                        "invalid UUID {} (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                        s.value.describe()
                    ),
                ))
            }
        };

        let memory = r.mib("memory")?;
        let maxmem = r.mib("maxmem")?;
        let memory_mib = memory.or(maxmem).map_or(32, |(v, _)| v);
        let maxmem_mib = maxmem.or(memory).map_or(32, |(v, _)| v);
        if let Some((_, s)) = maxmem {
            if maxmem_mib < memory_mib {
                return Err(Reader::bad(
                    s,
                    s.line,
                    format!("maxmem ({maxmem_mib} MiB) is less than memory ({memory_mib} MiB)"),
                ));
            }
        }

        let mut vcpus = 1u32;
        if let Some((v, s)) =
            r.bounded("vcpus", i64::from(i32::MIN), i64::from(u32::MAX), "vCPUs")?
        {
            if v < 1 {
                r.warn(
                    s,
                    s.line,
                    WarningKind::Adjusted,
                    format!("{v} vCPUs; using 1"),
                );
            } else {
                vcpus = v as u32;
            }
        }
        let maxvcpus = match r.bounded("maxvcpus", 0, i64::from(u32::MAX), "vCPUs")? {
            None | Some((0, _)) => vcpus,
            Some((m, s)) => {
                let m = m as u32;
                if m < vcpus {
                    return Err(Reader::bad(
                        s,
                        s.line,
                        format!("maxvcpus ({m}) is less than vcpus ({vcpus})"),
                    ));
                }
                m
            }
        };

        let kernel = r.string("kernel")?;
        let ramdisk = r.string("ramdisk")?.map(|(v, _)| v);
        let bootloader = r.string("bootloader")?.map(|(v, _)| v);

        // cmdline, or "root=ROOT EXTRA" (xl's parse_cmdline).
        let root = r.string("root")?;
        let extra = r.string("extra")?;
        let cmdline = match r.string("cmdline")? {
            Some((c, _)) => {
                for (_, s) in root.iter().chain(extra.iter()) {
                    r.warn(
                        s,
                        s.line,
                        WarningKind::Ignored,
                        "ignored in favour of `cmdline`",
                    );
                }
                Some(c)
            }
            None => match (&root, &extra) {
                (Some((root, _)), Some((extra, _))) => Some(format!("root={root} {extra}")),
                (Some((root, _)), None) => Some(format!("root={root}")),
                (None, Some((extra, _))) => Some(extra.clone()),
                (None, None) => None,
            },
        };

        let bootloader_args = match r.get("bootloader_args") {
            None => Vec::new(),
            Some(s) if !matches!(s.value.kind, ValueKind::List(_)) => {
                r.warn(
                    s,
                    s.line,
                    WarningKind::Deprecated,
                    "a string is deprecated; use a list of arguments",
                );
                let text = s.value.as_atom().unwrap_or("");
                text.split_whitespace().map(str::to_string).collect()
            }
            Some(_) => r
                .list("bootloader_args")?
                .map(|(v, _)| v.into_iter().map(|(a, _)| a).collect())
                .unwrap_or_default(),
        };

        let firmware = match r.string("firmware")? {
            None => None,
            Some((f, _)) if domain_type == DomainType::Hvm => Some(f),
            Some((f, s)) => {
                if let Some((_, ks)) = &kernel {
                    return Err(Reader::bad(
                        s,
                        s.line,
                        format!(
                            "both kernel (line {}) and firmware are set; use one",
                            ks.line
                        ),
                    ));
                }
                let full = ["pvgrub32", "pvgrub64"]
                    .into_iter()
                    .find(|p| p.starts_with(f.as_str()) && f.len() >= "pvgrub3".len());
                match full {
                    Some(p) => Some(p.to_string()),
                    None => {
                        return Err(Reader::bad(
                            s,
                            s.line,
                            format!(
                                "only pvgrub32 or pvgrub64 are supported as firmware for {} guests, got {}",
                                domain_type.as_str(),
                                s.value.describe()
                            ),
                        ))
                    }
                }
            }
        };
        let kernel = kernel.map(|(k, _)| k);
        if domain_type != DomainType::Hvm
            && kernel.is_none()
            && bootloader.is_none()
            && firmware.is_none()
        {
            return Err(r.missing(
                "kernel",
                "neither kernel nor bootloader specified (a PV or PVH guest needs `kernel`, `bootloader` or `firmware`)",
            ));
        }

        let mut disks: Vec<DiskSpec> = Vec::new();
        let mut disk_lines: Vec<u32> = Vec::new();
        if let Some((items, s)) = r.list("disk")? {
            for (spec, line) in items {
                let (d, notes) = DiskSpec::parse(&spec)
                    .map_err(|e| Reader::bad(s, line, format!("bad disk spec {spec:?}: {e}")))?;
                if let Some(i) = disks.iter().position(|o| o.vdev == d.vdev) {
                    return Err(Reader::bad(
                        s,
                        line,
                        format!(
                            "vdev `{}` is used twice (also at line {})",
                            d.vdev, disk_lines[i]
                        ),
                    ));
                }
                for n in notes {
                    r.warn(s, line, WarningKind::Ignored, format!("{spec:?}: {n}"));
                }
                disks.push(d);
                disk_lines.push(line);
            }
        }

        let mut vifs: Vec<VifSpec> = Vec::new();
        let mut vif_lines: Vec<u32> = Vec::new();
        if let Some((items, s)) = r.list("vif")? {
            for (i, (spec, line)) in items.into_iter().enumerate() {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                let (v, notes) = VifSpec::parse(&spec, index)
                    .map_err(|e| Reader::bad(s, line, format!("bad vif spec {spec:?}: {e}")))?;
                if let Some(j) = vifs.iter().position(|o| o.devid == v.devid) {
                    return Err(Reader::bad(
                        s,
                        line,
                        format!(
                            "devid {} is used twice (also at line {})",
                            v.devid, vif_lines[j]
                        ),
                    ));
                }
                for n in notes {
                    let kind = if n.contains("deprecated") {
                        WarningKind::Deprecated
                    } else {
                        WarningKind::Ignored
                    };
                    r.warn(s, line, kind, format!("{spec:?}: {n}"));
                }
                vifs.push(v);
                vif_lines.push(line);
            }
        }

        let serial = r
            .string_or_list("serial")?
            .map(|(v, _)| v.into_iter().map(|(a, _)| a).collect())
            .unwrap_or_default();

        let cfg = DomainConfig {
            name,
            uuid,
            domain_type,
            memory_mib,
            maxmem_mib,
            vcpus,
            maxvcpus,
            kernel,
            ramdisk,
            cmdline,
            firmware,
            bootloader,
            bootloader_args,
            disks,
            vifs,
            on_poweroff: r.action("on_poweroff", Action::Destroy)?,
            on_reboot: r.action("on_reboot", Action::Restart)?,
            on_crash: r.action("on_crash", Action::Destroy)?,
            on_watchdog: r.action("on_watchdog", Action::Destroy)?,
            on_soft_reset: r.action("on_soft_reset", Action::SoftReset)?,
            serial,
            vnc: r.boolean("vnc")?,
            sdl: r.boolean("sdl")?,
        };

        let mut warnings = r.warnings;
        warnings.sort_by_key(|w| (w.file != raw.file, w.line));
        Ok((cfg, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply_overrides, parse_str, to_json, Access, DevType, DiskFormat, NicType};
    use super::*;

    /// toolstack.md §1.5 A.
    const EXAMPLE_A: &str = r#"name       = "web01"
type       = "pv"
bootloader = "pygrub"
memory     = 2048
maxmem     = 4096
vcpus      = 2
maxvcpus   = 4
disk       = [ 'phy:/dev/vg0/web01-disk,xvda,w',
               'format=raw, vdev=xvdb, access=rw, target=/srv/xen/web01-data.img' ]
vif        = [ 'mac=00:16:3e:4a:10:01,bridge=xenbr0' ]
on_poweroff = 'destroy'
on_reboot   = 'restart'
on_crash    = 'restart'
"#;

    /// toolstack.md §1.5 B.
    const EXAMPLE_B: &str = r#"name    = "mail"
kernel  = "/boot/vmlinuz-6.1.0-18-amd64"
ramdisk = "/boot/initrd.img-6.1.0-18-amd64"
root    = "/dev/xvda2 ro"
extra   = "console=hvc0 elevator=noop"
memory  = 1024
vcpus   = 1
disk    = [ 'file:/home/xen/domains/mail/disk.img,xvda2,w',
            'file:/home/xen/domains/mail/swap.img,xvda1,w' ]
vif     = [ 'ip=192.0.2.25,mac=00:16:3E:8C:2A:11,bridge=xenbr0' ]
dhcp    = 'dhcp'   # xm leftover; xl ignores it
"#;

    /// toolstack.md §1.5 C.
    const EXAMPLE_C: &str = r#"name     = "win2k19"
type     = "hvm"
firmware = "bios"
memory   = 8192
vcpus    = 4
viridian = 1
disk     = [ '/dev/vg0/win2k19,raw,hda,rw',
             '/srv/iso/virtio-or-tools.iso,raw,hdc,cdrom' ]
vif      = [ 'type=ioemu,model=e1000,mac=00:16:3e:00:00:42,bridge=xenbr0' ]
boot     = "c"
xen_platform_pci = 1
vnc      = 1
vnclisten = "127.0.0.1"
serial   = 'pty'
usbdevice = [ 'tablet' ]
device_model_version = "qemu-xen"
on_reboot = 'restart'
"#;

    fn load(text: &str) -> (DomainConfig, Vec<Warning>) {
        let raw = parse_str(text, "guest.cfg").unwrap();
        DomainConfig::from_raw(&raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn load_err(text: &str) -> XlCfgError {
        let raw = parse_str(text, "guest.cfg").unwrap();
        DomainConfig::from_raw(&raw).unwrap_err()
    }

    #[test]
    fn example_a_pv_pygrub() {
        let (c, w) = load(EXAMPLE_A);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.name, "web01");
        assert_eq!(c.domain_type, DomainType::Pv);
        assert_eq!(c.bootloader.as_deref(), Some("pygrub"));
        assert_eq!(
            (c.memory_mib, c.maxmem_mib, c.vcpus, c.maxvcpus),
            (2048, 4096, 2, 4)
        );
        assert_eq!((c.kernel.as_deref(), c.cmdline.as_deref()), (None, None));
        assert_eq!(c.disks.len(), 2);
        let d = &c.disks[0];
        assert_eq!(
            (
                d.target.as_deref(),
                d.format,
                d.vdev.as_str(),
                d.access,
                d.devtype
            ),
            (
                Some("/dev/vg0/web01-disk"),
                DiskFormat::Raw,
                "xvda",
                Access::Rw,
                DevType::Disk
            )
        );
        assert_eq!(d.spec, "phy:/dev/vg0/web01-disk,xvda,w");
        let d = &c.disks[1];
        assert_eq!(
            (d.target.as_deref(), d.format, d.vdev.as_str(), d.access),
            (
                Some("/srv/xen/web01-data.img"),
                DiskFormat::Raw,
                "xvdb",
                Access::Rw
            )
        );
        assert_eq!(c.vifs.len(), 1);
        assert_eq!(c.vifs[0].mac.as_deref(), Some("00:16:3e:4a:10:01"));
        assert_eq!(c.vifs[0].bridge.as_deref(), Some("xenbr0"));
        assert_eq!(c.vifs[0].devid, 0);
        assert_eq!(
            (
                c.on_poweroff,
                c.on_reboot,
                c.on_crash,
                c.on_watchdog,
                c.on_soft_reset
            ),
            (
                Action::Destroy,
                Action::Restart,
                Action::Restart,
                Action::Destroy,
                Action::SoftReset
            )
        );
    }

    #[test]
    fn example_b_pv_direct_kernel() {
        let (c, w) = load(EXAMPLE_B);
        assert_eq!(c.name, "mail");
        assert_eq!(c.domain_type, DomainType::Pv);
        assert_eq!(c.kernel.as_deref(), Some("/boot/vmlinuz-6.1.0-18-amd64"));
        assert_eq!(
            c.ramdisk.as_deref(),
            Some("/boot/initrd.img-6.1.0-18-amd64")
        );
        assert_eq!(
            c.cmdline.as_deref(),
            Some("root=/dev/xvda2 ro console=hvc0 elevator=noop")
        );
        assert_eq!(
            (c.memory_mib, c.maxmem_mib, c.vcpus, c.maxvcpus),
            (1024, 1024, 1, 1)
        );
        let disks: Vec<_> = c
            .disks
            .iter()
            .map(|d| (d.target.as_deref().unwrap(), d.vdev.as_str(), d.access))
            .collect();
        assert_eq!(
            disks,
            [
                ("/home/xen/domains/mail/disk.img", "xvda2", Access::Rw),
                ("/home/xen/domains/mail/swap.img", "xvda1", Access::Rw)
            ]
        );
        let v = &c.vifs[0];
        assert_eq!(v.ip.as_deref(), Some("192.0.2.25"));
        assert_eq!(v.mac.as_deref(), Some("00:16:3e:8c:2a:11"));
        // `dhcp` is an unknown key: a warning with its line, not an error.
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            (w[0].kind, w[0].line, w[0].key.as_str()),
            (WarningKind::UnknownKey, 11, "dhcp")
        );
        assert_eq!(
            w[0].to_string(),
            "guest.cfg:11: warning: dhcp: unknown key; ignored"
        );
    }

    #[test]
    fn example_c_hvm_with_pv_drivers() {
        let (c, w) = load(EXAMPLE_C);
        assert_eq!(c.domain_type, DomainType::Hvm);
        assert_eq!(c.firmware.as_deref(), Some("bios"));
        assert_eq!((c.memory_mib, c.vcpus), (8192, 4));
        assert_eq!(c.disks[0].target.as_deref(), Some("/dev/vg0/win2k19"));
        assert_eq!(
            (c.disks[0].vdev.as_str(), c.disks[0].access),
            ("hda", Access::Rw)
        );
        let cd = &c.disks[1];
        assert_eq!(
            (
                cd.target.as_deref(),
                cd.vdev.as_str(),
                cd.devtype,
                cd.access,
                cd.format
            ),
            (
                Some("/srv/iso/virtio-or-tools.iso"),
                "hdc",
                DevType::Cdrom,
                Access::Ro,
                DiskFormat::Raw
            )
        );
        let v = &c.vifs[0];
        assert_eq!(
            (v.nic_type, v.model.as_deref()),
            (Some(NicType::Ioemu), Some("e1000"))
        );
        assert_eq!(c.serial, ["pty"]);
        assert_eq!(c.vnc, Some(true));
        let ignored: Vec<(&str, u32)> = w
            .iter()
            .inspect(|w| assert_eq!(w.kind, WarningKind::Ignored))
            .map(|w| (w.key.as_str(), w.line))
            .collect();
        assert_eq!(
            ignored,
            [
                ("viridian", 6),
                ("boot", 10),
                ("xen_platform_pci", 11),
                ("vnclisten", 13),
                ("usbdevice", 15),
                ("device_model_version", 16)
            ]
        );
    }

    #[test]
    fn json_field_names() {
        let (c, _) = load(EXAMPLE_A);
        let j: serde_json::Value = serde_json::from_str(&to_json(&c)).unwrap();
        assert_eq!(j["name"], "web01");
        assert_eq!(j["type"], "pv");
        assert_eq!(j["memory_mib"], 2048);
        assert_eq!(j["maxmem_mib"], 4096);
        assert_eq!(j["uuid"], serde_json::Value::Null);
        assert_eq!(j["on_crash"], "restart");
        assert_eq!(j["disks"][0]["target"], "/dev/vg0/web01-disk");
        assert_eq!(j["disks"][0]["access"], "rw");
        assert_eq!(j["disks"][0]["devtype"], "disk");
        assert_eq!(j["disks"][1]["format"], "raw");
        assert_eq!(j["vifs"][0]["mac"], "00:16:3e:4a:10:01");
        assert_eq!(j["vifs"][0]["type"], serde_json::Value::Null);
        // Round trip.
        let back: DomainConfig = serde_json::from_str(&to_json(&c)).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn typod_value_fails_with_file_line_and_key() {
        let e = load_err("name = 'g'\nkernel = '/k'\n\nmemory = '512Q'\n");
        assert_eq!(
            e.to_string(),
            r#"guest.cfg:4: memory: expected a size such as 512 (MiB), 512M or 1G, got "512Q""#
        );
        let e = load_err("name = 'g'\nkernel = '/k'\nvcpus = \"two\"\n");
        assert_eq!(
            e.to_string(),
            r#"guest.cfg:3: vcpus: expected an integer, got "two""#
        );
        assert!(matches!(e, XlCfgError::BadValue { line: 3, .. }));
        // A string holding an integer is fine, as in xl.
        let (c, _) = load("name = 'g'\nkernel = '/k'\nmemory = '512'\nvcpus = 0x2\n");
        assert_eq!((c.memory_mib, c.vcpus), (512, 2));
    }

    #[test]
    fn bad_on_reboot_action() {
        let e = load_err("name = 'g'\nkernel = '/k'\non_reboot = 'reboot'\n");
        assert!(
            matches!(&e, XlCfgError::BadValue { line: 3, key, .. } if key == "on_reboot"),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(r#"guest.cfg:3: on_reboot: unknown action "reboot" (expected one of destroy, restart"#),
            "{e}"
        );
        for a in Action::ALL {
            let (c, _) = load(&format!("name='g'\nkernel='/k'\non_crash='{a}'\n"));
            assert_eq!(c.on_crash, a);
        }
    }

    #[test]
    fn bad_disk_spec_names_the_item_line() {
        let e = load_err(
            "name = 'g'\nkernel = '/k'\ndisk = [ '/dev/a,,xvda',\n  '/dev/b,qcow3,xvdb' ]\n",
        );
        assert!(
            matches!(&e, XlCfgError::BadValue { line: 4, key, .. } if key == "disk"),
            "{e:?}"
        );
        assert!(e.to_string().contains("unknown format `qcow3`"), "{e}");
        let e = load_err("name = 'g'\nkernel = '/k'\ndisk = [ '/dev/a,,xvda', '/dev/b,,xvda' ]\n");
        assert!(e.to_string().contains("used twice"), "{e}");
        let e = load_err("name = 'g'\nkernel = '/k'\ndisk = '/dev/a,,xvda'\n");
        assert_eq!(e.line(), 3);
        let e = load_err("name = 'g'\nkernel = '/k'\nvif = [ 'mac=zz' ]\n");
        assert!(
            e.to_string().starts_with("guest.cfg:3: vif: bad vif spec"),
            "{e}"
        );
    }

    #[test]
    fn other_bad_values() {
        let base = "name = 'g'\nkernel = '/k'\n";
        for (extra, key) in [
            ("type = 'kvm'", "type"),
            ("builder = 'generic'\ntype = 'hvm'", "builder"),
            ("uuid = 'not-a-uuid'", "uuid"),
            ("memory = 0", "memory"),
            ("memory = 1024\nmaxmem = 512", "maxmem"),
            ("vcpus = 4\nmaxvcpus = 2", "maxvcpus"),
            ("firmware = 'ovmf'", "firmware"),
            ("kernel = ['/k']", "kernel"),
            ("vnc = 'yes'", "vnc"),
            ("disk = [ ['x'] ]", "disk"),
        ] {
            let e = load_err(&format!("{base}{extra}\n"));
            match &e {
                XlCfgError::BadValue { key: k, file, .. } => {
                    assert_eq!((k.as_str(), file.as_str()), (key, "guest.cfg"), "{e}")
                }
                _ => panic!("{extra}: {e:?}"),
            }
        }
    }

    #[test]
    fn missing_name_and_kernel() {
        let e = load_err("memory = 512\nkernel = '/k'\n");
        assert!(
            matches!(&e, XlCfgError::Missing { key, line: 2, .. } if key == "name"),
            "{e:?}"
        );
        let e = load_err("name = 'g'\n");
        assert!(
            matches!(&e, XlCfgError::Missing { key, .. } if key == "kernel"),
            "{e:?}"
        );
        // HVM needs neither; pvgrub firmware counts as a kernel.
        load("name = 'g'\ntype = 'hvm'\n");
        let (c, _) = load("name = 'g'\nfirmware = 'pvgrub64'\n");
        assert_eq!(c.firmware.as_deref(), Some("pvgrub64"));
    }

    #[test]
    fn defaults_and_xl_quirks() {
        let (c, w) = load("name = 'g'\nkernel = '/k'\n");
        assert_eq!(
            (c.memory_mib, c.maxmem_mib, c.vcpus, c.maxvcpus),
            (32, 32, 1, 1)
        );
        assert!(w.is_empty());
        let (c, _) = load("name = 'g'\nkernel = '/k'\nmaxmem = 256\n");
        assert_eq!((c.memory_mib, c.maxmem_mib), (256, 256));
        // type by prefix; builder alone.
        assert_eq!(load("name='g'\ntype='h'\n").0.domain_type, DomainType::Hvm);
        assert_eq!(
            load("name='g'\ntype='pvh'\nkernel='/k'\n").0.domain_type,
            DomainType::Pvh
        );
        assert_eq!(
            load("name='g'\nbuilder='hvm'\n").0.domain_type,
            DomainType::Hvm
        );
        assert_eq!(
            load("name='g'\nbuilder='generic'\ntype='pv'\nkernel='/k'\n")
                .0
                .domain_type,
            DomainType::Pv
        );
        // vcpus below 1 become 1, with a warning.
        let (c, w) = load("name='g'\nkernel='/k'\nvcpus=0\n");
        assert_eq!(c.vcpus, 1);
        assert_eq!(w[0].kind, WarningKind::Adjusted);
        // cmdline wins over root/extra.
        let (c, w) = load("name='g'\nkernel='/k'\ncmdline='a b'\nroot='/dev/xvda1'\n");
        assert_eq!(c.cmdline.as_deref(), Some("a b"));
        assert_eq!((w[0].key.as_str(), w[0].line), ("root", 4));
        assert_eq!(
            load("name='g'\nkernel='/k'\nroot='/dev/xvda1'\n")
                .0
                .cmdline
                .as_deref(),
            Some("root=/dev/xvda1")
        );
        // bootloader_args as a list or (deprecated) a string.
        let (c, _) =
            load("name='g'\nbootloader='pygrub'\nbootloader_args=['--kernel=/vmlinuz', '-q']\n");
        assert_eq!(c.bootloader_args, ["--kernel=/vmlinuz", "-q"]);
        let (c, w) = load("name='g'\nbootloader='pygrub'\nbootloader_args='-q  --entry=1'\n");
        assert_eq!(c.bootloader_args, ["-q", "--entry=1"]);
        assert_eq!(w[0].kind, WarningKind::Deprecated);
        // uuid lower-cased; name may be a number.
        let (c, _) = load("name=123\nkernel='/k'\nuuid='8A2C1F3E-0000-4000-8000-00163E000001'\n");
        assert_eq!(c.name, "123");
        assert_eq!(
            c.uuid.as_deref(),
            Some("8a2c1f3e-0000-4000-8000-00163e000001")
        );
        // firmware prefix for PV.
        assert_eq!(
            load("name='g'\nfirmware='pvgrub3'\n").0.firmware.as_deref(),
            Some("pvgrub32")
        );
        // serial as a list.
        assert_eq!(
            load("name='g'\ntype='hvm'\nserial=['pty','null']\n")
                .0
                .serial,
            ["pty", "null"]
        );
    }

    #[test]
    fn unknown_keys_warn_with_suggestions() {
        let (_, w) = load("name='g'\nkernel='/k'\nmemroy = 512\nMemory = 1\nfrobnicate = 1\nmemory = 5\nmemory = 6\n");
        let got: Vec<String> = w.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            got,
            [
                "guest.cfg:3: warning: memroy: unknown key; ignored (did you mean `memory`?)",
                "guest.cfg:4: warning: Memory: unknown key; ignored (did you mean `memory`?)",
                "guest.cfg:5: warning: frobnicate: unknown key; ignored",
                "guest.cfg:7: warning: memory: set again; the value at line 6 is replaced",
            ]
        );
    }

    #[test]
    fn overrides_feed_the_model() {
        let mut raw = parse_str(EXAMPLE_B, "mail.cfg").unwrap();
        apply_overrides(
            &mut raw,
            &[
                "memory=2048".into(),
                "name=mail2".into(),
                "vif=['bridge=br1']".into(),
                "bogus=1".into(),
            ],
        )
        .unwrap();
        let (c, w) = DomainConfig::from_raw(&raw).unwrap();
        assert_eq!(
            (c.name.as_str(), c.memory_mib, c.maxmem_mib),
            ("mail2", 2048, 2048)
        );
        assert_eq!(c.vifs[0].bridge.as_deref(), Some("br1"));
        assert_eq!(
            w.last().unwrap().to_string(),
            "command line:4: warning: bogus: unknown key; ignored"
        );
        // A bad override value names the command line and the key.
        let mut raw = parse_str(EXAMPLE_B, "mail.cfg").unwrap();
        apply_overrides(&mut raw, &["vcpus=1".into(), "memory=lots".into()]).unwrap();
        let e = DomainConfig::from_raw(&raw).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"command line:2: memory: expected a size such as 512 (MiB), 512M or 1G, got "lots""#
        );
    }

    #[test]
    fn memory_sizes_take_units() {
        for (v, mib) in [
            ("512", 512),
            ("'512'", 512),
            ("512M", 512),
            ("'1G'", 1024),
            ("1G", 1024),
            ("1.5GiB", 1536),
            ("0x200", 512),
        ] {
            let (c, _) = load(&format!("name='g'\nkernel='/k'\nmemory = {v}\n"));
            assert_eq!(c.memory_mib, mib, "{v}");
        }
        let (c, _) = load("name='g'\nkernel='/k'\nmemory = 1G\nmaxmem = 2G\n");
        assert_eq!((c.memory_mib, c.maxmem_mib), (1024, 2048));
        // Overrides too: `memory=2G` on the command line.
        let mut raw = parse_str("name='g'\nkernel='/k'\n", "guest.cfg").unwrap();
        apply_overrides(&mut raw, &["memory=2G".into()]).unwrap();
        assert_eq!(DomainConfig::from_raw(&raw).unwrap().0.memory_mib, 2048);
        for (v, msg) in [
            ("0", "guest.cfg:3: memory: 0 MiB: a domain needs memory"),
            ("'0G'", "guest.cfg:3: memory: 0 MiB: a domain needs memory"),
            (
                "'-5'",
                "guest.cfg:3: memory: expected a size such as 512 (MiB), 512M or 1G, got \"-5\"",
            ),
            (
                "1500K",
                "guest.cfg:3: memory: 1500K is not a whole number of MiB",
            ),
            (
                "99999999999T",
                "guest.cfg:3: memory: \"99999999999T\" is too large",
            ),
        ] {
            let e = load_err(&format!("name='g'\nkernel='/k'\nmemory = {v}\n"));
            assert_eq!(e.to_string(), msg, "{v}");
        }
    }
}
