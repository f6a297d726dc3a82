//! The host's one clock: wall-clock time as the store keeps it (unix
//! milliseconds) and as tool results and the CLI show it (RFC 3339, UTC).

/// Milliseconds since the Unix epoch, signed as SQLite stores them.
pub type UnixMs = i64;

/// Now, in milliseconds since the Unix epoch: proto's clock (the one the
/// guest stamps events with) as the store's signed column type.
pub fn now_ms() -> UnixMs {
    UnixMs::try_from(delegate_proto::clock::now_ms()).unwrap_or(UnixMs::MAX)
}

/// `2026-05-01T12:00:00.123Z`; a time chrono cannot represent stays the
/// plain number rather than turning into a wrong date.
pub fn rfc3339(ms: UnixMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
