//! Checks of single setting values: URLs, user and token ids, node,
//! storage and pool ids, VMID ranges, fingerprints, tags.

use std::ops::RangeInclusive;

use crate::resolve::{SettingsError, invalid};

pub(super) fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn check_url(url: &str) -> Result<String, SettingsError> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api2/json").unwrap_or(trimmed);
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| invalid("PROXMOX_URL", format!("{url:?} is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(invalid(
            "PROXMOX_URL",
            format!("{url:?} must use https:// (Proxmox VE serves its API over TLS only)"),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("PROXMOX_URL", format!("{url:?} has no host")));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid(
            "PROXMOX_URL",
            format!("{url:?}: give only scheme, host and port, e.g. https://pve.example:8006"),
        ));
    }
    Ok(trimmed.to_string())
}

/// `USER@REALM` as PVE's `pve-userid` format accepts it.
pub fn is_user_id(text: &str) -> bool {
    let Some((user, realm)) = text.rsplit_once('@') else {
        return false;
    };
    !user.is_empty()
        && user.len() <= 60
        && !user
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '/')
        && is_realm_or_token_name(realm)
}

pub(super) fn is_realm_or_token_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `USER@REALM!TOKENNAME`.
pub fn is_token_id(text: &str) -> bool {
    match text.split_once('!') {
        Some((user, name)) => is_user_id(user) && is_realm_or_token_name(name),
        None => false,
    }
}

pub(super) fn check_token_id(setting: &'static str, id: &str) -> Result<(), SettingsError> {
    if is_token_id(id) {
        Ok(())
    } else {
        Err(invalid(
            setting,
            format!(
                "{id:?} is not a token id; expected USER@REALM!TOKENNAME, e.g. delegate@pve!host"
            ),
        ))
    }
}

pub(super) fn check_user_id(setting: &'static str, id: &str) -> Result<(), SettingsError> {
    if is_user_id(id) {
        Ok(())
    } else {
        Err(invalid(
            setting,
            format!("{id:?} is not a user id; expected USER@REALM, e.g. delegate@pve"),
        ))
    }
}

pub(super) fn check_secret(setting: &'static str, secret: &str) -> Result<(), SettingsError> {
    if secret.is_empty() {
        return Err(invalid(setting, "is empty"));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            setting,
            "contains spaces or non-ASCII characters (a token secret is a UUID)",
        ));
    }
    Ok(())
}

pub(super) fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !s.starts_with('-')
}

pub(super) fn is_storage_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn is_pool_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
}

pub(super) fn optional_id(
    setting: &'static str,
    value: Option<&str>,
    ok: fn(&str) -> bool,
) -> Result<Option<String>, SettingsError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if ok(v) => Ok(Some(v.to_string())),
        Some(v) => Err(invalid(
            setting,
            format!("{v:?} is not a valid identifier (letters, digits, '-', '_')"),
        )),
    }
}

pub(super) fn parse_vmid_range(text: &str) -> Result<RangeInclusive<u32>, SettingsError> {
    let bad = || {
        invalid(
            "PROXMOX_VMID_RANGE",
            format!("{text:?} is not FIRST-LAST with 100 <= FIRST <= LAST <= 999999999"),
        )
    };
    let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
    let first: u32 = a.trim().parse().map_err(|_| bad())?;
    let last: u32 = b.trim().parse().map_err(|_| bad())?;
    if first < 100 || last > 999_999_999 || first > last {
        return Err(bad());
    }
    Ok(first..=last)
}

/// Parses `AB:CD:...` (32 bytes); also accepts plain hex.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats a fingerprint as PVE shows it: upper-case colon-separated hex.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Lower-cases and keeps what a PVE tag allows (`[a-z0-9_+.-]`).
pub fn tag_safe(text: &str) -> String {
    let s: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+') {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches(|c| c == '-' || c == '.' || c == '+')
        .chars()
        .take(48)
        .collect()
}
