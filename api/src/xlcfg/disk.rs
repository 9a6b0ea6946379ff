//! Disk spec strings (xl-disk-configuration(5), libxlu's `libxlu_disk_l.l`).
//!
//! `[key=value|flag,]* [target, [format, [vdev, [access]]]] [,key=value|flag]* [,target=TARGET]`
//!
//! Bare words fill the positional slots still unset, in the order target,
//! format, vdev, access; an empty word means "default". `target=` takes
//! the whole rest of the string. The xm-era prefixes `raw:` `qcow:`
//! `qcow2:` `vhd:` (format), `iscsi:` `nbd:` `enbd:` `drbd:` (script
//! `block-*`) and `phy:` `file:` `tap:` `tap2:` `aio:` `ioemu:` `tapdisk:`
//! (dropped) may precede the target, and a vdev may carry `:cdrom` or
//! `:disk`. Unlike libxlu, blanks after a parameter are dropped too.

use serde::{Deserialize, Serialize};

/// Image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow,
    Qcow2,
    Vhd,
    Qed,
    /// An empty (removable) drive.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Rw,
    Ro,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevType {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    Phy,
    Qdisk,
    Tap,
    Standalone,
    /// xenkvm's: the disk is served by a vhost-user-blk backend whose
    /// socket is `target=` (README: vhost-user backends).
    #[serde(rename = "vhost-user")]
    VhostUser,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Specification {
    Xen,
    Virtio,
}

/// One `disk = [ ... ]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Host path (relative ones get `/dev/` prepended unless a script is
    /// set) or script argument; None or "" for an empty cdrom drive.
    pub target: Option<String>,
    pub format: DiskFormat,
    /// Guest device name (`xvda`, `hdc`, `sda`, `d0p1`, or a number).
    pub vdev: String,
    pub access: Access,
    pub devtype: DevType,
    /// Backend domain name (driver domains; not supported by xenkvm).
    pub backend: Option<String>,
    pub backendtype: Option<BackendType>,
    /// Hotplug script, e.g. `block-iscsi`.
    pub script: Option<String>,
    pub direct_io_safe: bool,
    pub discard: Option<bool>,
    pub trusted: Option<bool>,
    pub grant_usage: Option<bool>,
    pub specification: Option<Specification>,
    /// The spec string as written.
    pub spec: String,
}

#[derive(Default)]
struct State {
    target: Option<String>,
    format: Option<DiskFormat>,
    vdev: Option<String>,
    access_set: bool,
    readwrite: bool,
    is_cdrom: bool,
    had_depr_prefix: bool,
    backend: Option<String>,
    backendtype: Option<BackendType>,
    script: Option<String>,
    direct_io_safe: bool,
    discard: Option<bool>,
    trusted: Option<bool>,
    grant_usage: Option<bool>,
    specification: Option<Specification>,
    notes: Vec<String>,
}

/// Sets a string once; an empty earlier value may be replaced.
fn save(slot: &mut Option<String>, what: &str, value: &str) -> Result<(), String> {
    if let Some(old) = slot {
        if !old.is_empty() {
            return Err(format!("{what} respecified near `{value}`"));
        }
    }
    *slot = Some(value.to_string());
    Ok(())
}

/// Sets an enum once; the same value again is fine.
fn set_once<T: PartialEq + Copy>(
    slot: &mut Option<T>,
    what: &str,
    v: T,
    near: &str,
) -> Result<(), String> {
    match slot {
        Some(old) if *old != v => Err(format!("{what} respecified near `{near}`")),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// Where `,vdev=` (or another disk key) starts inside a `target=` value.
fn keys_after_target(t: &str) -> Option<usize> {
    const KEYS: [&str; 7] = [
        "vdev=",
        "access=",
        "format=",
        "devtype=",
        "backendtype=",
        "backend=",
        "script=",
    ];
    t.match_indices(',')
        .map(|(i, _)| i)
        .find(|&i| KEYS.iter().any(|k| t[i + 1..].starts_with(k)))
}

impl State {
    fn set_format(&mut self, s: &str) -> Result<(), String> {
        let f = match s {
            "" | "raw" => DiskFormat::Raw,
            "qcow" => DiskFormat::Qcow,
            "qcow2" => DiskFormat::Qcow2,
            "vhd" => DiskFormat::Vhd,
            "qed" => DiskFormat::Qed,
            "empty" => DiskFormat::Empty,
            _ => {
                return Err(format!(
                    "unknown format `{s}` (expected raw, qcow, qcow2, vhd, qed or empty)"
                ))
            }
        };
        set_once(&mut self.format, "format", f, s)
    }

    fn set_access(&mut self, s: &str) -> Result<(), String> {
        self.readwrite = match s {
            "r" | "ro" => false,
            "w" | "rw" | "" => true,
            _ => return Err(format!("unknown access `{s}` (expected rw, w, ro or r)")),
        };
        Ok(())
    }

    /// `vdev:cdrom` / `vdev:disk`; false (and nothing done) without a colon.
    fn vdev_and_devtype(&mut self, s: &str) -> Result<bool, String> {
        let Some((vdev, ty)) = s.rsplit_once(':') else {
            return Ok(false);
        };
        save(&mut self.vdev, "vdev", vdev)?;
        match ty {
            "cdrom" => self.is_cdrom = true,
            "disk" => self.is_cdrom = false,
            _ => {
                return Err(format!(
                    "unknown device type `{ty}` in `{s}` (expected cdrom or disk)"
                ))
            }
        }
        Ok(true)
    }

    fn keyword(&mut self, key: &str, value: &str, token: &str) -> Result<(), String> {
        match key {
            "format" => self.set_format(value)?,
            "devtype" => match value {
                "cdrom" => self.is_cdrom = true,
                "disk" => self.is_cdrom = false,
                _ => {
                    return Err(format!(
                        "unknown devtype `{value}` (expected cdrom or disk)"
                    ))
                }
            },
            "access" => self.set_access(value)?,
            "backend" => save(&mut self.backend, "backend", value)?,
            "backendtype" => {
                let b = match value {
                    "phy" => BackendType::Phy,
                    "qdisk" => BackendType::Qdisk,
                    "tap" => BackendType::Tap,
                    "standalone" => BackendType::Standalone,
                    "vhost-user" => BackendType::VhostUser,
                    _ => {
                        return Err(format!(
                            "unknown backendtype `{value}` (expected phy, qdisk, tap, standalone or vhost-user)"
                        ))
                    }
                };
                set_once(&mut self.backendtype, "backendtype", b, token)?;
            }
            "specification" => {
                let s = match value {
                    "xen" => Specification::Xen,
                    "virtio" => Specification::Virtio,
                    _ => {
                        return Err(format!(
                            "unknown specification `{value}` (expected xen or virtio)"
                        ))
                    }
                };
                set_once(&mut self.specification, "specification", s, token)?;
            }
            "vdev" => save(&mut self.vdev, "vdev", value)?,
            "script" => save(&mut self.script, "script", value)?,
            "grant_usage" => match value {
                "0" => self.grant_usage = Some(false),
                "1" => self.grant_usage = Some(true),
                _ => return Err(format!("unknown grant_usage `{value}` (expected 0 or 1)")),
            },
            "colo-host" | "colo-port" | "colo-export" | "active-disk" | "hidden-disk" => {
                self.notes.push(format!("COLO parameter `{key}` ignored"));
            }
            _ => return Err(format!("unknown parameter `{key}` in `{token}`")),
        }
        Ok(())
    }

    fn flag(&mut self, token: &str) -> bool {
        match token {
            "cdrom" => self.is_cdrom = true,
            "direct-io-safe" => self.direct_io_safe = true,
            "discard" => self.discard = Some(true),
            "no-discard" => self.discard = Some(false),
            "trusted" => self.trusted = Some(true),
            "untrusted" => self.trusted = Some(false),
            "colo" | "no-colo" => self.notes.push(format!("COLO flag `{token}` ignored")),
            _ => return false,
        }
        true
    }

    fn positional(&mut self, token: &str) -> Result<(), String> {
        if self.target.is_none() {
            save(&mut self.target, "target", token)
        } else if !self.had_depr_prefix && self.format.is_none() {
            if self.target.as_deref() == Some("") && self.vdev_and_devtype(token)? {
                self.format = Some(DiskFormat::Empty);
                Ok(())
            } else {
                self.set_format(token)
            }
        } else if self.vdev.is_none() {
            if !self.vdev_and_devtype(token)? {
                save(&mut self.vdev, "vdev", token)?;
            }
            Ok(())
        } else if !self.access_set {
            self.access_set = true;
            self.set_access(token)
        } else {
            Err(format!("too many positional parameters near `{token}`"))
        }
    }

    /// An xm-era `word:` prefix at the start of `rest`: Some(rest after
    /// it) if it was one and has been applied.
    fn deprecated_prefix<'s>(&mut self, rest: &'s str) -> Result<Option<&'s str>, String> {
        let word_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        if word_len == 0
            || !rest.as_bytes()[0].is_ascii_lowercase()
            || rest.as_bytes().get(word_len) != Some(&b':')
        {
            return Ok(None);
        }
        let word = &rest[..word_len];
        let after = &rest[word_len + 1..];
        match word {
            "raw" | "qcow" | "qcow2" | "vhd" => self.set_format(word)?,
            "iscsi" | "nbd" | "enbd" | "drbd" => {
                save(&mut self.script, "script", &format!("block-{word}"))?
            }
            "tapdisk" | "tap" | "tap2" | "aio" | "ioemu" | "file" | "phy" => {}
            _ => {
                // `hdc:cdrom` is a vdev, not a prefix; libxlu only treats
                // an unknown word as a prefix if no letter or digit follows.
                return match after.bytes().next() {
                    Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() => Ok(None),
                    _ => Err(format!("unknown deprecated disk prefix `{word}:`")),
                };
            }
        }
        self.had_depr_prefix = true;
        Ok(Some(after))
    }
}

impl DiskSpec {
    /// Parses one disk spec string. On success also returns notes about
    /// parts that were accepted but ignored; on failure a message (without
    /// location) saying what is wrong.
    pub fn parse(spec: &str) -> Result<(DiskSpec, Vec<String>), String> {
        let mut st = State {
            readwrite: true,
            ..State::default()
        };
        let mut rest = spec;
        loop {
            rest = rest.trim_start_matches([' ', '\t', '\n']);
            if rest.is_empty() {
                break;
            }
            if let Some(t) = rest.strip_prefix("target=") {
                // xl takes the whole rest as the path; people also write
                // `target=/img,vdev=xvda,...` (the path is then cut at the
                // first `,key=` of a disk key, and a note says so).
                if let Some(i) = keys_after_target(t) {
                    save(&mut st.target, "target", &t[..i])?;
                    st.notes.push(format!(
                        "target= is not last in {spec:?}; read `{}` as keys",
                        &t[i + 1..]
                    ));
                    rest = &t[i + 1..];
                    continue;
                }
                let t = t.strip_suffix(',').unwrap_or(t);
                save(&mut st.target, "target", t)?;
                break;
            }
            if let Some(after) = st.deprecated_prefix(rest)? {
                rest = after;
                continue;
            }
            let (token, next) = match rest.find(',') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            rest = next;
            let token = token.trim_end_matches([' ', '\t', '\n']);
            if let Some((key, value)) = token.split_once('=') {
                st.keyword(key, value, token)?;
            } else if !st.flag(token) {
                st.positional(token)?;
            }
        }

        let mut format = st.format.unwrap_or(DiskFormat::Raw);
        if st.is_cdrom {
            st.readwrite = false;
            if st.target.as_deref().unwrap_or("").is_empty() {
                format = DiskFormat::Empty;
            }
        }
        let Some(vdev) = st.vdev.filter(|v| !v.is_empty()) else {
            return Err("no vdev specified".to_string());
        };
        if st.target.is_none() && !st.is_cdrom {
            return Err("no target specified (and device not removable)".to_string());
        }
        let target = match st.target {
            Some(t) if !t.is_empty() && !t.starts_with('/') && st.script.is_none() => {
                Some(format!("/dev/{t}"))
            }
            t => t,
        };
        Ok((
            DiskSpec {
                target,
                format,
                vdev,
                access: if st.readwrite { Access::Rw } else { Access::Ro },
                devtype: if st.is_cdrom {
                    DevType::Cdrom
                } else {
                    DevType::Disk
                },
                backend: st.backend,
                backendtype: st.backendtype,
                script: st.script,
                direct_io_safe: st.direct_io_safe,
                discard: st.discard,
                trusted: st.trusted,
                grant_usage: st.grant_usage,
                specification: st.specification,
                spec: spec.to_string(),
            },
            st.notes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> DiskSpec {
        match DiskSpec::parse(spec) {
            Ok((d, _)) => d,
            Err(e) => panic!("{spec}: {e}"),
        }
    }

    /// The fields compared by libxl's check-xl-disk-parse.
    fn key(d: &DiskSpec) -> (Option<&str>, DiskFormat, &str, Access, DevType) {
        (
            d.target.as_deref(),
            d.format,
            d.vdev.as_str(),
            d.access,
            d.devtype,
        )
    }

    #[test]
    fn equivalent_spellings_from_the_man_page() {
        let want = (
            Some("/dev/vg/guest-volume"),
            DiskFormat::Raw,
            "hda",
            Access::Rw,
            DevType::Disk,
        );
        for s in [
            "/dev/vg/guest-volume,,hda",
            "/dev/vg/guest-volume,raw,hda,rw",
            "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
            "raw:/dev/vg/guest-volume,hda,w",
        ] {
            assert_eq!(key(&p(s)), want, "{s}");
        }
        let want = (
            Some("/root/image.iso"),
            DiskFormat::Raw,
            "hdc",
            Access::Ro,
            DevType::Cdrom,
        );
        for s in [
            "/root/image.iso,,hdc,cdrom",
            "/root/image.iso,,hdc,,cdrom",
            "/root/image.iso,raw,hdc,devtype=cdrom",
            "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
            "raw:/root/image.iso,hdc:cdrom,ro",
        ] {
            assert_eq!(key(&p(s)), want, "{s}");
        }
    }

    #[test]
    fn empty_cdrom_drives() {
        for s in [
            "devtype=cdrom,,,hdc",
            ",,hdc:cdrom,r",
            ",hdc:cdrom,r",
            "vdev=hdc,access=r,devtype=cdrom,target=",
            ",empty,hdc:cdrom,r",
        ] {
            assert_eq!(
                key(&p(s)),
                (
                    Some(""),
                    DiskFormat::Empty,
                    "hdc",
                    Access::Ro,
                    DevType::Cdrom
                ),
                "{s}"
            );
        }
        for s in [
            "vdev=hdc,access=r,devtype=cdrom,format=empty",
            "vdev=hdc,access=r,devtype=cdrom",
        ] {
            assert_eq!(
                key(&p(s)),
                (None, DiskFormat::Empty, "hdc", Access::Ro, DevType::Cdrom),
                "{s}"
            );
        }
    }

    #[test]
    fn scripts_prefixes_and_flags() {
        let d = p("iscsi:iqn.2001-05.com.equallogic:0-8a0906-23fe93404-c82797962054a96d-examplehost,xvda,w");
        assert_eq!(
            d.target.as_deref(),
            Some("iqn.2001-05.com.equallogic:0-8a0906-23fe93404-c82797962054a96d-examplehost")
        );
        assert_eq!(
            (d.script.as_deref(), d.vdev.as_str()),
            (Some("block-iscsi"), "xvda")
        );
        let d = p("drbd:app01,hda,w");
        assert_eq!(
            (d.target.as_deref(), d.script.as_deref()),
            (Some("app01"), Some("block-drbd"))
        );
        let d = p("tap:qcow2:/images/a.qcow2,xvda,w");
        assert_eq!(
            (d.format, d.target.as_deref()),
            (DiskFormat::Qcow2, Some("/images/a.qcow2"))
        );
        let d = p("tap:aio:/images/a.img,xvda,r");
        assert_eq!((d.format, d.access), (DiskFormat::Raw, Access::Ro));
        let d = p("backendtype=phy,vdev=xvdb,access=w,target=/dev/vg/guest-volume");
        assert_eq!(d.backendtype, Some(BackendType::Phy));
        let d = p("vdev=xvdb, backendtype=vhost-user, target=/run/vhost-blk.sock");
        assert_eq!(d.backendtype, Some(BackendType::VhostUser));
        assert_eq!(d.target.as_deref(), Some("/run/vhost-blk.sock"));
        let d = p("discard,untrusted,direct-io-safe,specification=virtio,grant_usage=0,vdev=hda,target=/x,y");
        assert_eq!(
            (
                d.discard,
                d.trusted,
                d.direct_io_safe,
                d.specification,
                d.grant_usage
            ),
            (
                Some(true),
                Some(false),
                true,
                Some(Specification::Virtio),
                Some(false)
            )
        );
        assert_eq!(d.target.as_deref(), Some("/x,y"));
        let d = p("cdrom,no-discard,vdev=hda,target=/some/disk/image.iso");
        assert_eq!((d.devtype, d.discard), (DevType::Cdrom, Some(false)));
        // xm-era relative device names are under /dev.
        assert_eq!(p("phy:sda1,xvda1,w").target.as_deref(), Some("/dev/sda1"));
        let (_, notes) = DiskSpec::parse("colo,colo-host=h,vdev=xvda,target=/x").unwrap();
        assert_eq!(notes.len(), 2);
    }

    #[test]
    fn bad_disk_specs() {
        for (s, want) in [
            ("/dev/x", "no vdev specified"),
            ("vdev=xvda", "no target specified"),
            ("/dev/x,raw,xvda,rw,extra", "too many positional parameters"),
            ("/dev/x,qcow3,xvda", "unknown format `qcow3`"),
            ("/dev/x,,xvda,rwx", "unknown access `rwx`"),
            ("foo:/dev/x,xvda", "unknown deprecated disk prefix `foo:`"),
            ("/dev/x,,xvda,devtype=floppy", "unknown devtype"),
            ("/dev/x,,xvda,size=10", "unknown parameter `size`"),
            ("vdev=xvda,vdev=xvdb,target=/x", "vdev respecified"),
            ("qcow2:/x,xvda,format=raw", "format respecified"),
            ("/x,,hdc:floppy", "unknown device type"),
            ("", "no vdev specified"),
        ] {
            let e = DiskSpec::parse(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }

    #[test]
    fn target_first_then_keys() {
        let (d, notes) =
            DiskSpec::parse("target=/img.qcow2,vdev=xvda,access=rw,format=qcow2").unwrap();
        assert_eq!(d.target.as_deref(), Some("/img.qcow2"));
        assert_eq!(d.vdev, "xvda");
        assert_eq!(d.format, DiskFormat::Qcow2);
        assert_eq!(d.access, Access::Rw);
        assert_eq!(notes.len(), 1, "{notes:?}");
        // Commas in a path not followed by a disk key stay in the path.
        let (d, _) = DiskSpec::parse("vdev=xvdb,target=/a,b/c.img").unwrap();
        assert_eq!(d.target.as_deref(), Some("/a,b/c.img"));
    }
}
