//! Sizes written the way people write them: `512M`, `2G`, `1.5G`, `1024`.
//!
//! Every unit is binary, however it is written: `4G`, `4GB` and `4GiB` all
//! mean 4 × 1024³ bytes, as for docker's `--memory`, Proxmox and `free -g`.
//! Decimal gigabytes (10⁹) are never meant for VM memory and disks here, so
//! `GB` is read as the unit people mean by it, and the README and the
//! manifest schema say so; the error message repeats it.

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a size: write a number with an optional binary unit K, M, G or T \
     (like 512M, 2G, 1.5G; 2GB and 2GiB mean 2G, 2 × 1024³ bytes)"
)]
pub struct SizeError(pub String);

/// Parses a size with an optional binary unit (`K`, `M`, `G`, `T`, with
/// optional `i` and `B`, any case) into bytes. A bare number is bytes.
/// `GB` is binary too: see the module documentation.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = || SizeError(text.to_string());
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(err());
    }
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.strip_suffix('B').unwrap_or(&unit);
    let unit = unit.strip_suffix('I').unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(err()),
    };
    let bytes = if let Some((whole, frac)) = number.split_once('.') {
        let whole: u64 = whole.parse().map_err(|_| err())?;
        if frac.contains('.') || frac.len() > 6 || multiplier == 1 {
            return Err(err());
        }
        let frac_value: u64 = frac.parse().map_err(|_| err())?;
        let scale = 10u64.pow(frac.len() as u32);
        whole
            .checked_mul(multiplier)
            .and_then(|w| w.checked_add(frac_value * multiplier / scale))
            .ok_or_else(err)?
    } else {
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or_else(err)?
    };
    Ok(bytes)
}

/// Formats bytes in the largest binary unit that divides them (`2G`, `1536M`).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        for (text, bytes) in [
            ("512M", 512 << 20),
            ("2G", 2 << 30),
            ("2g", 2 << 30),
            ("2GiB", 2 << 30),
            ("2GB", 2 << 30),
            ("1.5G", 3 << 29),
            ("1024", 1024),
            ("10K", 10 << 10),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn every_spelling_of_a_unit_is_binary() {
        // The documented reading of "4GB": the same as 4G and 4GiB.
        let four_gib = 4u64 << 30;
        for text in ["4G", "4GB", "4GiB", "4gb", "4 GB", "4096M", "4096MB"] {
            assert_eq!(parse_size(text), Ok(four_gib), "{text}");
        }
        assert_ne!(parse_size("4GB"), Ok(4_000_000_000));
    }

    #[test]
    fn the_error_says_how_sizes_are_written() {
        let e = parse_size("4 gigs").unwrap_err().to_string();
        assert!(e.contains("\"4 gigs\""), "{e}");
        assert!(e.contains("binary") && e.contains("2GB"), "{e}");
    }

    #[test]
    fn refuses_garbage() {
        for text in [
            "",
            "G",
            "2X",
            "-1G",
            "1..5G",
            ".5G",
            "5.G",
            "1.5",
            "99999999999T",
            "2 G B x",
        ] {
            assert!(parse_size(text).is_err(), "{text} should not parse");
        }
    }

    #[test]
    fn formats_round_trip() {
        for bytes in [2u64 << 30, 1536 << 20, 1000, 1 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }
}
