//! PVE's named string formats (`pve-node`, `pve-tag-list`,
//! `pve-qm-smbios1`, ...) for the parameters the provider sends; formats we
//! do not model are accepted.

use base64::Engine;

fn is_node(v: &str) -> bool {
    !v.is_empty()
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

fn is_dns_name(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(is_node)
}

fn is_storage_id(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    lower.len() >= 2
        && lower.starts_with(|c: char| c.is_ascii_lowercase())
        && lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && lower.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `[a-z0-9_][a-z0-9_+.-]*`, case-insensitive.
pub fn is_tag(v: &str) -> bool {
    let mut chars = v.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

fn is_configid(v: &str) -> bool {
    v.len() >= 2
        && v.starts_with(|c: char| c.is_ascii_alphabetic())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_uuid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The smbios1 property string: with `base64=1` every text field must be
/// valid base64; without it, only a restricted character set is allowed.
fn check_smbios1(v: &str) -> Result<(), String> {
    const TEXT: [&str; 6] = [
        "family",
        "manufacturer",
        "product",
        "serial",
        "sku",
        "version",
    ];
    let mut base64 = false;
    let mut fields = Vec::new();
    for part in v.split(',').filter(|p| !p.is_empty()) {
        let Some((k, val)) = part.split_once('=') else {
            return Err(format!("format error - value without key: '{part}'"));
        };
        match k {
            "base64" => base64 = super::schema::parse_bool(val).unwrap_or(false),
            "uuid" => {
                if !is_uuid(val) {
                    return Err(format!("format error - uuid: value '{val}' is not a UUID"));
                }
            }
            k if TEXT.contains(&k) => fields.push((k, val)),
            other => {
                return Err(format!(
                    "format error - {other}: property is not defined in schema"
                ));
            }
        }
    }
    for (k, val) in fields {
        if base64 {
            if base64::engine::general_purpose::STANDARD
                .decode(val)
                .is_err()
            {
                return Err(format!("format error - {k}: invalid base64 value '{val}'"));
            }
        } else if !val
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_' | '/' | '+'))
        {
            return Err(format!(
                "format error - {k}: value '{val}' has characters that need base64=1"
            ));
        }
    }
    Ok(())
}

/// Checks `value` against the named format.
pub fn check(format: &str, value: &str) -> Result<(), String> {
    let ok = match format {
        "pve-node" => is_node(value),
        "dns-name" => is_dns_name(value),
        "pve-storage-id" => {
            if !is_storage_id(value) {
                return Err(format!("storage ID '{value}' contains illegal characters"));
            }
            true
        }
        "pve-poolid" => {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
        }
        "pve-configid" => is_configid(value),
        "pve-configid-list" => value
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .all(is_configid),
        "pve-tag-list" => {
            for tag in value.split([';', ',', ' ']).filter(|s| !s.is_empty()) {
                if !is_tag(tag) {
                    return Err(format!("invalid characters in tag '{tag}'"));
                }
            }
            true
        }
        "pve-qm-smbios1" => return check_smbios1(value),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "value does not look like a valid {}",
            describe(format)
        ))
    }
}

fn describe(format: &str) -> &str {
    match format {
        "pve-node" => "node name",
        "dns-name" => "DNS name",
        "pve-poolid" => "pool ID",
        "pve-configid" | "pve-configid-list" => "config ID",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbios1_rules() {
        assert!(
            check(
                "pve-qm-smbios1",
                "uuid=0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b,serial=am9i,base64=1"
            )
            .is_ok()
        );
        assert!(check("pve-qm-smbios1", "serial=job-1").is_ok());
        assert!(check("pve-qm-smbios1", "serial=a=b").is_err());
        assert!(check("pve-qm-smbios1", "serial=***,base64=1").is_err());
        assert!(check("pve-qm-smbios1", "uuid=nope").is_err());
        assert!(check("pve-qm-smbios1", "color=red").is_err());
    }

    #[test]
    fn tags_and_names() {
        assert!(check("pve-tag-list", "delegate;delegate-host1").is_ok());
        assert!(check("pve-tag-list", "bad tag!").is_err());
        assert!(check("pve-node", "pve-1").is_ok());
        assert!(check("pve-node", "pve_1").is_err());
        assert!(check("dns-name", "job-1.example").is_ok());
        assert!(check("pve-storage-id", "local-lvm").is_ok());
        assert!(check("pve-storage-id", "1x").is_err());
    }
}
