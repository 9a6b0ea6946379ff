//! Guest MAC addresses: parsed from the config or generated, stably, in
//! Xen's OUI 00:16:3e from the domain name and device id.

/// `aa:bb:cc:dd:ee:ff` (or with `-`), one or two hex digits per octet.
pub fn parse(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// 00:16:3e:xx:xx:xx from FNV-1a of `name` and `devid` (the fourth octet's
/// top bit clear, as libxl's random MACs have it): the same guest and nic
/// get the same MAC on every start.
pub fn generate(name: &str, devid: u32) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0]).chain(devid.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    [0x00, 0x16, 0x3e, b[0] & 0x7f, b[1], b[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_generate() {
        assert_eq!(
            parse("00:16:3e:0a:b:FF"),
            Some([0, 0x16, 0x3e, 0x0a, 0x0b, 0xff])
        );
        assert_eq!(parse("00-16-3e-00-00-01"), Some([0, 0x16, 0x3e, 0, 0, 1]));
        for bad in [
            "",
            "00:16:3e:00:00",
            "00:16:3e:00:00:00:00",
            "00:16:3e:0g:00:00",
            "000:1:2:3:4:5",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let a = generate("guest", 0);
        assert_eq!(a, generate("guest", 0));
        assert_ne!(a, generate("guest", 1));
        assert_ne!(a, generate("other", 0));
        assert_eq!(&a[..3], &[0x00, 0x16, 0x3e]);
        assert_eq!(a[3] & 0x80, 0);
        assert_eq!(format(&[0, 0x16, 0x3e, 1, 0xab, 2]), "00:16:3e:01:ab:02");
    }
}
