//! Memory sizes as users type them: xl's plain number of MiB (`512`), or a
//! number with a unit as QEMU users write it (`512M`, `1G`, `1.5G`,
//! `2048MiB`, `4GB`). Units are binary whatever their spelling: K, M, G, T,
//! optionally followed by `B` or `iB`, in either case.

/// Why a size is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a size such as 512 (MiB), 512M or 1G, got {0:?}")]
    Syntax(String),
    #[error("{0} is not a whole number of MiB")]
    NotWholeMib(String),
    #[error("{0} is too large")]
    TooLarge(String),
}

/// log2 of the unit's size in bytes.
fn unit_shift(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_lowercase();
    let base = u
        .strip_suffix("ib")
        .or_else(|| u.strip_suffix('b'))
        .unwrap_or(&u);
    Some(match base {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    })
}

/// `text` split in its digits, fraction digits and unit, if it has the
/// shape of a size with a unit (`1.5G`).
fn split(text: &str) -> Option<(&str, &str, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !num.ends_with('.');
    ok.then_some((int, frac, unit))
}

/// Does `text` look like a size with a unit (`512M`)? The lexer reads such
/// a word as a string, so that `memory = 512M` needs no quotes.
pub fn is_size_word(text: &str) -> bool {
    split(text).is_some_and(|(_, _, unit)| unit_shift(unit).is_some())
}

/// A size in MiB: a plain number is MiB (as in xl.cfg), a unit says
/// otherwise.
pub fn parse_mib(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let syntax = || SizeError::Syntax(text.to_string());
    let (int, frac, unit) = split(t).ok_or_else(syntax)?;
    let shift = if unit.is_empty() {
        if !frac.is_empty() {
            return Err(syntax());
        }
        20
    } else {
        unit_shift(unit).ok_or_else(syntax)?
    };
    let too_large = || SizeError::TooLarge(t.to_string());
    // Bytes, exactly: int * 2^shift + frac * 2^shift / 10^len(frac).
    let int: u128 = int.parse().map_err(|_| too_large())?;
    if frac.len() > 18 {
        return Err(syntax());
    }
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| syntax())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let frac_bytes = frac_val << shift;
    if !frac_bytes.is_multiple_of(scale) {
        return Err(SizeError::NotWholeMib(t.to_string()));
    }
    let bytes = int
        .checked_mul(1u128 << shift)
        .and_then(|b| b.checked_add(frac_bytes / scale))
        .ok_or_else(too_large)?;
    if !bytes.is_multiple_of(1 << 20) {
        return Err(SizeError::NotWholeMib(t.to_string()));
    }
    u64::try_from(bytes >> 20).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_mib_and_units_as_qemu() {
        for (t, mib) in [
            ("512", 512),
            ("512M", 512),
            ("512m", 512),
            ("512MiB", 512),
            ("512MB", 512),
            ("1G", 1024),
            ("1g", 1024),
            ("1GiB", 1024),
            ("1.5G", 1536),
            ("0.5G", 512),
            ("2T", 2 << 20),
            ("1048576K", 1024),
            ("1024k", 1),
            ("0", 0),
        ] {
            assert_eq!(parse_mib(t), Ok(mib), "{t}");
        }
    }

    #[test]
    fn bad_sizes() {
        for t in [
            "", "M", "lots", "1.5", "1.G", ".5G", "12X", "1GG", "-1G", "1 G",
        ] {
            assert!(
                matches!(parse_mib(t), Err(SizeError::Syntax(_))),
                "{t}: {:?}",
                parse_mib(t)
            );
        }
        assert_eq!(
            parse_mib("1500K"),
            Err(SizeError::NotWholeMib("1500K".into()))
        );
        assert_eq!(
            parse_mib("1.1M"),
            Err(SizeError::NotWholeMib("1.1M".into()))
        );
        assert!(matches!(
            parse_mib("99999999999999999999999999999999999999999T"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_mib("99999999999999999999T"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn size_words() {
        assert!(is_size_word("512M"));
        assert!(is_size_word("1.5GiB"));
        assert!(!is_size_word("512"));
        assert!(!is_size_word("512X"));
        assert!(!is_size_word("12ab"));
        assert!(!is_size_word("0x10"));
    }
}
