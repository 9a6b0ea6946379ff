//! vif spec strings (xl-network-configuration(5), xl's `parse_nic_config`):
//! comma-separated `key=value` pairs and flags, all optional.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicType {
    /// PV only.
    Vif,
    /// HVM: an emulated NIC and a PV vif.
    Ioemu,
}

/// `rate=10Mb/s@20ms`: bandwidth limit and credit interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifRate {
    /// The rate as written.
    pub spec: String,
    pub bytes_per_sec: u64,
    /// Credit replenishment interval; default 50 ms.
    pub interval_usecs: u32,
}

/// One `vif = [ ... ]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifSpec {
    /// Device id: the index in the list unless `devid=` is given.
    pub devid: u32,
    /// `xx:xx:xx:xx:xx:xx`, lower case; None means a random one in
    /// Xen's OUI 00:16:3e.
    pub mac: Option<String>,
    pub bridge: Option<String>,
    pub model: Option<String>,
    pub ip: Option<String>,
    pub script: Option<String>,
    pub vifname: Option<String>,
    #[serde(rename = "type")]
    pub nic_type: Option<NicType>,
    pub rate: Option<VifRate>,
    pub mtu: Option<u32>,
    pub vlan: Option<String>,
    pub backend: Option<String>,
    /// `gatewaydev=` (or the deprecated `netdev=`), for vif-route.
    pub gatewaydev: Option<String>,
    pub trusted: Option<bool>,
    /// xenkvm's: `backendtype=vhost-user` with `target=SOCKET`: the nic is
    /// served by a vhost-user-net backend listening there (no tap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<String>,
    /// The spec string as written.
    pub spec: String,
}

/// Parses `aa:bb:cc:dd:ee:ff` (one or two hex digits per octet).
fn parse_mac(s: &str) -> Option<String> {
    let octets: Vec<&str> = s.split(':').collect();
    if octets.len() != 6 {
        return None;
    }
    let mut out = Vec::with_capacity(6);
    for o in octets {
        if o.is_empty() || o.len() > 2 || !o.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        out.push(format!("{:02x}", u8::from_str_radix(o, 16).ok()?));
    }
    Some(out.join(":"))
}

/// Parses a rate per libxlu's `xlu_vif_parse_rate`:
/// `N[GMK]{B|b}/s[@N[m|u]s]`.
fn parse_rate(spec: &str) -> Result<VifRate, String> {
    let (rate, interval) = match spec.split_once('@') {
        Some((r, i)) => (r, Some(i)),
        None => (spec, None),
    };
    let bad = || format!("invalid rate `{spec}` (expected e.g. 10Mb/s, 250KB/s or 1MB/s@20ms)");
    let digits = rate.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = rate[..digits].parse().map_err(|_| bad())?;
    if n == 0 || n > u64::from(u32::MAX) {
        return Err(format!("rate overflow in `{spec}`"));
    }
    let (mult, unit) = match &rate[digits..] {
        u @ ("GB/s" | "Gb/s") => (1_000_000_000, u),
        u @ ("MB/s" | "Mb/s") => (1_000_000, u),
        u @ ("KB/s" | "Kb/s") => (1_000, u),
        u @ ("B/s" | "b/s") => (1, u),
        _ => return Err(bad()),
    };
    let mut bytes_per_sec = n * mult;
    if unit.contains('b') {
        bytes_per_sec /= 8;
    }
    let interval_usecs = match interval {
        None => 50_000,
        Some(i) => {
            let bad =
                || format!("invalid replenishment interval `{i}` in `{spec}` (expected e.g. 20ms)");
            let digits = i.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = i[..digits].parse().map_err(|_| bad())?;
            let mult = match &i[digits..] {
                "" | "s" => 1_000_000,
                "m" | "ms" => 1_000,
                "u" | "us" => 1,
                _ => return Err(bad()),
            };
            if n == 0 {
                return Err(bad());
            }
            u32::try_from(n.saturating_mul(mult))
                .map_err(|_| format!("replenishment interval overflow in `{spec}`"))?
        }
    };
    Ok(VifRate {
        spec: spec.to_string(),
        bytes_per_sec,
        interval_usecs,
    })
}

fn parse_u32(key: &str, v: &str) -> Result<u32, String> {
    v.parse()
        .map_err(|_| format!("{key}: expected a non-negative integer, got `{v}`"))
}

impl VifSpec {
    /// Parses one vif spec; `index` is its position in the list. On
    /// success also returns notes about ignored parameters; on failure a
    /// message (without location).
    pub fn parse(spec: &str, index: u32) -> Result<(VifSpec, Vec<String>), String> {
        let mut v = VifSpec {
            devid: index,
            mac: None,
            bridge: None,
            model: None,
            ip: None,
            script: None,
            vifname: None,
            nic_type: None,
            rate: None,
            mtu: None,
            vlan: None,
            backend: None,
            gatewaydev: None,
            trusted: None,
            vhost_user: None,
            spec: spec.to_string(),
        };
        let mut notes = Vec::new();
        let mut backendtype: Option<String> = None;
        let mut target: Option<String> = None;
        for token in spec.split(',') {
            let token = token.trim_matches([' ', '\t', '\n']);
            if token.is_empty() {
                continue;
            }
            let Some((key, val)) = token.split_once('=') else {
                match token {
                    "trusted" => v.trusted = Some(true),
                    "untrusted" => v.trusted = Some(false),
                    _ => notes.push(format!("unrecognized vif argument `{token}` ignored")),
                }
                continue;
            };
            let s = || Some(val.to_string());
            match key {
                "type" => {
                    v.nic_type = Some(match val {
                        "vif" => NicType::Vif,
                        "ioemu" => NicType::Ioemu,
                        _ => return Err(format!("unknown type `{val}` (expected vif or ioemu)")),
                    })
                }
                "mac" => {
                    v.mac = Some(parse_mac(val).ok_or_else(|| {
                        format!(
                            "invalid mac `{val}` (expected six hex octets like 00:16:3e:4a:10:01)"
                        )
                    })?)
                }
                "bridge" => v.bridge = s(),
                "netdev" => {
                    notes.push("`netdev` is deprecated, use `gatewaydev`".to_string());
                    v.gatewaydev = s();
                }
                "gatewaydev" => v.gatewaydev = s(),
                "ip" => v.ip = s(),
                "script" => v.script = s(),
                "backend" => v.backend = s(),
                "vifname" => v.vifname = s(),
                "model" => v.model = s(),
                "rate" => v.rate = Some(parse_rate(val)?),
                "devid" => v.devid = parse_u32(key, val)?,
                "mtu" => v.mtu = Some(parse_u32(key, val)?),
                "vlan" => v.vlan = s(),
                "backendtype" if val == "vhost-user" => backendtype = s(),
                "backendtype" => {
                    return Err(format!("unknown backendtype `{val}` (expected vhost-user)"))
                }
                "target" => target = s(),
                "accel" => notes.push("`accel` is not supported, ignored".to_string()),
                k if k.starts_with("colo") || k == "forwarddev" => {
                    notes.push(format!("COLO parameter `{k}` ignored"))
                }
                _ => notes.push(format!("unrecognized vif argument `{token}` ignored")),
            }
        }
        match (backendtype, target) {
            (Some(_), Some(t)) if !t.is_empty() => v.vhost_user = Some(t),
            (Some(_), _) => return Err("backendtype=vhost-user needs target=SOCKET".into()),
            (None, Some(_)) => return Err("target= is only for backendtype=vhost-user".into()),
            (None, None) => {}
        }
        Ok((v, notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_user_vif() {
        let (v, _) = VifSpec::parse(
            "mac=00:16:3e:00:00:01, backendtype=vhost-user, target=/run/n.sock",
            0,
        )
        .unwrap();
        assert_eq!(v.vhost_user.as_deref(), Some("/run/n.sock"));
        assert!(VifSpec::parse("backendtype=vhost-user", 0).is_err());
        assert!(VifSpec::parse("target=/x", 0).is_err());
        assert!(VifSpec::parse("backendtype=tap", 0).is_err());
    }

    #[test]
    fn vif_keys() {
        let (v, notes) = VifSpec::parse(
            "ip=192.0.2.25, mac=00:16:3E:8C:2A:1,bridge=xenbr0,type=ioemu,model=e1000,vifname=web0,script=vif-route,mtu=9000,devid=3,untrusted,rate=10Mb/s@20ms",
            0,
        )
        .unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(v.mac.as_deref(), Some("00:16:3e:8c:2a:01"));
        assert_eq!(v.ip.as_deref(), Some("192.0.2.25"));
        assert_eq!(v.bridge.as_deref(), Some("xenbr0"));
        assert_eq!(v.nic_type, Some(NicType::Ioemu));
        assert_eq!(v.model.as_deref(), Some("e1000"));
        assert_eq!((v.devid, v.mtu, v.trusted), (3, Some(9000), Some(false)));
        let r = v.rate.unwrap();
        assert_eq!((r.bytes_per_sec, r.interval_usecs), (1_250_000, 20_000));
    }

    #[test]
    fn empty_vif_means_defaults() {
        let (v, _) = VifSpec::parse("", 2).unwrap();
        assert_eq!(v.devid, 2);
        assert_eq!(v.mac, None);
    }

    #[test]
    fn rates() {
        let r = |s| parse_rate(s).map(|r| (r.bytes_per_sec, r.interval_usecs));
        assert_eq!(r("250KB/s"), Ok((250_000, 50_000)));
        assert_eq!(r("1MB/s@20ms"), Ok((1_000_000, 20_000)));
        assert_eq!(r("8b/s@1s"), Ok((1, 1_000_000)));
        assert_eq!(r("1GB/s@100us"), Ok((1_000_000_000, 100)));
        for bad in ["", "10", "10Mbit/s", "0MB/s", "1MB/s@", "1MB/s@20h", "MB/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_vifs() {
        for (s, want) in [
            ("mac=00:16:3e:00:00", "invalid mac"),
            ("mac=00:16:3e:00:00:zz", "invalid mac"),
            ("type=pv", "unknown type"),
            ("rate=fast", "invalid rate"),
            ("mtu=big", "mtu"),
        ] {
            let e = VifSpec::parse(s, 0).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        let (_, notes) = VifSpec::parse("bogus=1,netdev=eth0", 0).unwrap();
        assert_eq!(notes.len(), 2);
    }
}
