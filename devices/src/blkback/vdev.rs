//! Guest device names to xenstore device numbers, as in Xen's
//! docs/misc/vbd-interface.txt: `xvda`, `xvdb3`, `hda`, `sdc2`, `d0p1`,
//! or a plain number.

/// The `virtual-device` number for `name`, or None if it is not one.
pub fn devid(name: &str) -> Option<u32> {
    let name = name.split(':').next()?.trim();
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    if let Some(rest) = name.strip_prefix("xvd") {
        let (disk, part) = letters_then_number(rest)?;
        return xvd(disk, part);
    }
    if let Some(rest) = name.strip_prefix('d') {
        let (d, p) = rest.split_once('p').unwrap_or((rest, "0"));
        return xvd(d.parse().ok()?, p.parse().ok()?);
    }
    if let Some(rest) = name.strip_prefix("hd") {
        let (disk, part) = letters_then_number(rest)?;
        if part > 63 {
            return None;
        }
        let major = match disk {
            0 | 1 => 3,
            2 | 3 => 22,
            _ => return None,
        };
        return Some(major << 8 | (disk % 2) << 6 | part);
    }
    if let Some(rest) = name.strip_prefix("sd") {
        let (disk, part) = letters_then_number(rest)?;
        if disk > 15 || part > 15 {
            return None;
        }
        return Some(8 << 8 | disk << 4 | part);
    }
    None
}

fn xvd(disk: u32, part: u32) -> Option<u32> {
    if disk < 16 && part < 16 {
        Some(202 << 8 | disk << 4 | part)
    } else if disk < (1 << 20) && part < 256 {
        Some(1 << 28 | disk << 8 | part)
    } else {
        None
    }
}

/// `a`..`z`, `aa`.. (bijective base 26) then an optional partition number.
fn letters_then_number(s: &str) -> Option<(u32, u32)> {
    let split = s.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(s.len());
    let (letters, digits) = s.split_at(split);
    if letters.is_empty() || letters.len() > 4 {
        return None;
    }
    let mut disk: u32 = 0;
    for c in letters.bytes() {
        disk = disk * 26 + u32::from(c - b'a') + 1;
    }
    let part = if digits.is_empty() {
        0
    } else {
        if digits.starts_with('0') {
            return None;
        }
        digits.parse().ok()?
    };
    Some((disk - 1, part))
}

#[cfg(test)]
mod tests {
    use super::devid;

    #[test]
    fn vbd_interface_examples() {
        assert_eq!(devid("xvda"), Some(51712));
        assert_eq!(devid("xvda1"), Some(51713));
        assert_eq!(devid("xvdb"), Some(51728));
        assert_eq!(devid("xvdq"), Some(1 << 28 | 16 << 8));
        assert_eq!(devid("xvdaa"), Some(1 << 28 | 26 << 8));
        assert_eq!(devid("d0p1"), Some(51713));
        assert_eq!(devid("hda"), Some(768));
        assert_eq!(devid("hdc"), Some(22 << 8));
        assert_eq!(devid("sdb2"), Some(8 << 8 | 16 | 2));
        assert_eq!(devid("51712"), Some(51712));
        assert_eq!(devid("xvda:disk"), Some(51712));
        for bad in ["", "xvd", "xvd1", "eth0", "xvda01", "hde", "sdzzzzz"] {
            assert_eq!(devid(bad), None, "{bad}");
        }
    }
}
