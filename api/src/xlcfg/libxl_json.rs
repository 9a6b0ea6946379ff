//! The domain configuration Xen's toolstack writes into a save file or a
//! migration stream: libxl's `libxl_domain_config` as JSON (xl's save header
//! carries it). Translated into xl.cfg settings and then read by the same
//! parser as a user's xl.cfg, so that every check and default is the same.
//!
//! Read: `c_info` (type, name, uuid), `b_info` (max_vcpus, avail_vcpus,
//! max_memkb, target_memkb, kernel, ramdisk, cmdline, bootloader,
//! bootloader_args), `disks` (pdev_path, vdev, format, readwrite, is_cdrom,
//! backend, script, discard_enable), `nics` (devid, mac, bridge, ip, script,
//! ifname, model, mtu) and the `on_*` actions. Everything else (scheduler,
//! claim mode, per-arch settings, device-model options) does not change how a
//! PV guest runs here and is left out.

use serde_json::{Map, Value};

use super::{load, DomainConfig, Warning, XlCfgError};

/// The file name the translated settings are reported under.
pub const LIBXL_FILE: &str = "<libxl configuration>";

/// Largest configuration accepted (libxl's are a few KiB).
pub const MAX_LIBXL_JSON: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LibxlJsonError {
    #[error("the libxl configuration is larger than {MAX_LIBXL_JSON} bytes")]
    TooLarge,
    #[error("the libxl configuration is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the libxl configuration has no `{0}` object")]
    Missing(&'static str),
    #[error("the libxl configuration's `{field}` is not {expected}")]
    Type {
        field: String,
        expected: &'static str,
    },
    #[error("the libxl configuration, as xl.cfg: {0}")]
    Config(#[from] XlCfgError),
}

/// Is `json` libxl's configuration (rather than xenkvm's own model)?
pub fn is_libxl_json(json: &str) -> bool {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("c_info")))
        .unwrap_or(false)
}

/// The domain configuration in libxl's JSON `json`.
pub fn from_libxl_json(json: &str) -> Result<(DomainConfig, Vec<Warning>), LibxlJsonError> {
    let text = to_xl_cfg(json)?;
    Ok(load(&text, LIBXL_FILE, &[])?)
}

/// libxl's JSON `json` as xl.cfg text.
pub fn to_xl_cfg(json: &str) -> Result<String, LibxlJsonError> {
    if json.len() > MAX_LIBXL_JSON {
        return Err(LibxlJsonError::TooLarge);
    }
    let root: Value = serde_json::from_str(json)?;
    let root = object(&root, "(top level)")?;
    let c_info = object(
        root.get("c_info")
            .ok_or(LibxlJsonError::Missing("c_info"))?,
        "c_info",
    )?;
    let b_info = object(
        root.get("b_info")
            .ok_or(LibxlJsonError::Missing("b_info"))?,
        "b_info",
    )?;
    let mut out = Cfg::default();

    if let Some(t) = string(c_info, "c_info.type", "type")? {
        out.string("type", &t);
    }
    if let Some(n) = string(c_info, "c_info.name", "name")? {
        out.string("name", &n);
    }
    if let Some(u) = string(c_info, "c_info.uuid", "uuid")? {
        out.string("uuid", &u);
    }

    if let Some(max) = number(b_info, "b_info.max_vcpus", "max_vcpus")? {
        out.number("maxvcpus", max);
        // avail_vcpus is a bitmap written as the list of set bits.
        let online = match b_info.get("avail_vcpus") {
            Some(Value::Array(a)) => a.len() as u64,
            _ => max,
        };
        out.number("vcpus", online.clamp(1, max.max(1)));
    }
    // libxl adds the video RAM to max_memkb (0 for PV).
    let video = number(b_info, "b_info.video_memkb", "video_memkb")?.unwrap_or(0);
    if let Some(t) = number(b_info, "b_info.target_memkb", "target_memkb")? {
        out.number("memory", t.saturating_sub(video) >> 10);
    }
    if let Some(m) = number(b_info, "b_info.max_memkb", "max_memkb")? {
        out.number("maxmem", m.saturating_sub(video) >> 10);
    }
    for (json_key, xl_key) in [
        ("kernel", "kernel"),
        ("ramdisk", "ramdisk"),
        ("cmdline", "cmdline"),
        ("bootloader", "bootloader"),
    ] {
        if let Some(v) = string(b_info, &format!("b_info.{json_key}"), json_key)? {
            out.string(xl_key, &v);
        }
    }
    if let Some(args) = b_info.get("bootloader_args") {
        let list = strings(args, "b_info.bootloader_args")?;
        out.list("bootloader_args", &list);
    }

    if let Some(disks) = root.get("disks") {
        let disks = array(disks, "disks")?;
        let specs = disks
            .iter()
            .enumerate()
            .map(|(i, d)| disk_spec(object(d, "disks[]")?, i))
            .collect::<Result<Vec<_>, _>>()?;
        out.list("disk", &specs);
    }
    if let Some(nics) = root.get("nics") {
        let nics = array(nics, "nics")?;
        let specs = nics
            .iter()
            .map(|n| vif_spec(object(n, "nics[]")?))
            .collect::<Result<Vec<_>, _>>()?;
        out.list("vif", &specs);
    }
    for key in [
        "on_poweroff",
        "on_reboot",
        "on_watchdog",
        "on_crash",
        "on_soft_reset",
    ] {
        if let Some(a) = string(root, key, key)? {
            // libxl's enum names use '_' where xl.cfg uses '-'.
            out.string(key, &a.to_ascii_lowercase().replace('_', "-"));
        }
    }
    Ok(out.text)
}

/// One libxl disk as an xl disk spec (`target=` last: it may hold commas).
fn disk_spec(d: &Map<String, Value>, i: usize) -> Result<String, LibxlJsonError> {
    let field = |k: &str| format!("disks[{i}].{k}");
    let mut parts = Vec::new();
    if let Some(f) = string(d, &field("format"), "format")? {
        if f != "unknown" {
            parts.push(format!("format={}", f.to_ascii_lowercase()));
        }
    }
    if let Some(v) = string(d, &field("vdev"), "vdev")? {
        parts.push(format!("vdev={v}"));
    }
    let rw = number(d, &field("readwrite"), "readwrite")?.unwrap_or(0) != 0;
    parts.push(format!("access={}", if rw { "rw" } else { "ro" }));
    if number(d, &field("is_cdrom"), "is_cdrom")?.unwrap_or(0) != 0 {
        parts.push("devtype=cdrom".into());
    }
    if let Some(b) = string(d, &field("backend"), "backend")? {
        if matches!(b.as_str(), "phy" | "qdisk" | "tap" | "standalone") {
            parts.push(format!("backendtype={b}"));
        }
    }
    if let Some(s) = string(d, &field("script"), "script")? {
        parts.push(format!("script={s}"));
    }
    if let Some(Value::String(b)) = d.get("discard_enable") {
        match b.as_str() {
            "True" => parts.push("discard".into()),
            "False" => parts.push("no-discard".into()),
            _ => {}
        }
    }
    let target = string(d, &field("pdev_path"), "pdev_path")?.unwrap_or_default();
    parts.push(format!("target={target}"));
    Ok(parts.join(","))
}

/// One libxl nic as an xl vif spec.
fn vif_spec(n: &Map<String, Value>) -> Result<String, LibxlJsonError> {
    let mut parts = Vec::new();
    if let Some(id) = number(n, "nics[].devid", "devid")? {
        parts.push(format!("devid={id}"));
    }
    for (json_key, xl_key) in [
        ("mac", "mac"),
        ("bridge", "bridge"),
        ("ip", "ip"),
        ("script", "script"),
        ("ifname", "vifname"),
        ("model", "model"),
    ] {
        if let Some(v) = string(n, &format!("nics[].{json_key}"), json_key)? {
            // A value with a comma cannot be written in a vif spec.
            if !v.contains(',') {
                parts.push(format!("{xl_key}={v}"));
            }
        }
    }
    if let Some(m) = number(n, "nics[].mtu", "mtu")? {
        if m != 0 {
            parts.push(format!("mtu={m}"));
        }
    }
    Ok(parts.join(","))
}

/// xl.cfg text under construction.
#[derive(Default)]
struct Cfg {
    text: String,
}

impl Cfg {
    fn string(&mut self, key: &str, v: &str) {
        self.text.push_str(&format!("{key} = {}\n", quote(v)));
    }
    fn number(&mut self, key: &str, v: u64) {
        self.text.push_str(&format!("{key} = {v}\n"));
    }
    fn list(&mut self, key: &str, items: &[String]) {
        let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
        self.text
            .push_str(&format!("{key} = [ {} ]\n", items.join(", ")));
    }
}

/// `s` as a double-quoted xl.cfg string (escapes as xl's lexer reads them).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                q.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, LibxlJsonError> {
    v.as_object().ok_or_else(|| LibxlJsonError::Type {
        field: field.into(),
        expected: "an object",
    })
}

fn array<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, LibxlJsonError> {
    v.as_array().ok_or_else(|| LibxlJsonError::Type {
        field: field.into(),
        expected: "a list",
    })
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, LibxlJsonError> {
    array(v, field)?
        .iter()
        .map(|s| {
            s.as_str().map(str::to_string).ok_or(LibxlJsonError::Type {
                field: field.into(),
                expected: "a list of strings",
            })
        })
        .collect()
}

/// An optional string member (JSON null counts as absent).
fn string(
    o: &Map<String, Value>,
    field: &str,
    key: &str,
) -> Result<Option<String>, LibxlJsonError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(LibxlJsonError::Type {
            field: field.into(),
            expected: "a string",
        }),
    }
}

/// An optional unsigned number member.
fn number(o: &Map<String, Value>, field: &str, key: &str) -> Result<Option<u64>, LibxlJsonError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| LibxlJsonError::Type {
            field: field.into(),
            expected: "an unsigned number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xlcfg::{Access, Action, DiskFormat, DomainType};

    /// As Xen 4.17's `xl save` writes it (resources/xen/mksave.sh), plus a
    /// disk and a nic.
    const SAVED: &str = r#"{
        "c_info": { "type": "pv", "name": "counter",
                    "uuid": "75db6003-43b7-4f41-9f43-ab693e0d73ec",
                    "run_hotplug_scripts": "True" },
        "b_info": { "max_vcpus": 2, "avail_vcpus": [ 0 ],
                    "max_memkb": 262144, "target_memkb": 131072, "video_memkb": 0,
                    "sched_params": { "sched": "credit2", "weight": 256, "cap": 0 },
                    "claim_mode": "True", "kernel": "/job/vmlinuz",
                    "cmdline": "console=hvc0 say=\"hi\"", "ramdisk": "/job/guest.cpio.gz",
                    "type.pv": {}, "arch_arm": {}, "arch_x86": { "msr_relaxed": "False" } },
        "disks": [ { "pdev_path": "/srv/a,b.img", "vdev": "xvda", "backend": "qdisk",
                     "format": "qcow2", "readwrite": 1, "discard_enable": "True" } ],
        "nics": [ { "devid": 0, "mac": "00:16:3e:01:02:03", "bridge": "xenbr0",
                    "script": "vif-bridge" } ],
        "on_reboot": "restart",
        "on_soft_reset": "soft_reset",
        "on_crash": "coredump_restart"
    }"#;

    #[test]
    fn a_saved_configuration_reads_as_the_same_domain() {
        assert!(is_libxl_json(SAVED));
        let (c, _) = from_libxl_json(SAVED).unwrap();
        assert_eq!(c.name, "counter");
        assert_eq!(c.domain_type, DomainType::Pv);
        assert_eq!(
            c.uuid.as_deref(),
            Some("75db6003-43b7-4f41-9f43-ab693e0d73ec")
        );
        assert_eq!((c.memory_mib, c.maxmem_mib), (128, 256));
        assert_eq!((c.vcpus, c.maxvcpus), (1, 2));
        assert_eq!(c.kernel.as_deref(), Some("/job/vmlinuz"));
        assert_eq!(c.ramdisk.as_deref(), Some("/job/guest.cpio.gz"));
        assert_eq!(c.cmdline.as_deref(), Some("console=hvc0 say=\"hi\""));
        assert_eq!(c.on_reboot, Action::Restart);
        assert_eq!(c.on_soft_reset, Action::SoftReset);
        assert_eq!(c.on_crash, Action::CoredumpRestart);
        assert_eq!(c.on_poweroff, Action::Destroy);
        assert_eq!(c.disks.len(), 1);
        let d = &c.disks[0];
        assert_eq!(d.target.as_deref(), Some("/srv/a,b.img"));
        assert_eq!((d.format, d.access), (DiskFormat::Qcow2, Access::Rw));
        assert_eq!(d.vdev, "xvda");
        assert_eq!(d.discard, Some(true));
        assert_eq!(c.vifs.len(), 1);
        assert_eq!(c.vifs[0].mac.as_deref(), Some("00:16:3e:01:02:03"));
        assert_eq!(c.vifs[0].bridge.as_deref(), Some("xenbr0"));
    }

    #[test]
    fn xenkvm_s_own_model_is_not_libxl_s() {
        let own = crate::xlcfg::to_json(&DomainConfig {
            name: "x".into(),
            ..DomainConfig::default()
        });
        assert!(!is_libxl_json(&own));
        assert!(!is_libxl_json("not json"));
    }

    #[test]
    fn hostile_configurations_are_errors_not_panics() {
        for bad in [
            "[]",
            "{}",
            r#"{"c_info": 1, "b_info": {}}"#,
            r#"{"c_info": {}, "b_info": {"max_vcpus": -1}}"#,
            r#"{"c_info": {}, "b_info": {"kernel": 7}}"#,
            r#"{"c_info": {"name": "a\"\nmemory = 1"}, "b_info": {}}"#,
            r#"{"c_info": {}, "b_info": {}, "disks": [1]}"#,
            r#"{"c_info": {}, "b_info": {}, "nics": {}}"#,
            r#"{"c_info": {}, "b_info": {}, "on_crash": "explode"}"#,
        ] {
            assert!(from_libxl_json(bad).is_err(), "{bad}");
        }
        let huge = format!(
            "{{\"c_info\": {{\"name\": \"{}\"}}}}",
            "a".repeat(MAX_LIBXL_JSON)
        );
        assert!(matches!(
            from_libxl_json(&huge),
            Err(LibxlJsonError::TooLarge)
        ));
    }

    #[test]
    fn quoting_survives_the_lexer() {
        for s in ["plain", "a\"b", "back\\slash", "new\nline", "tab\there"] {
            let text = format!("name = {}\n", quote(s));
            let raw = crate::xlcfg::parse_str(&text, "t").unwrap();
            let got = raw.get("name").unwrap();
            assert_eq!(got.value.as_atom(), Some(s), "{text}");
        }
    }
}
