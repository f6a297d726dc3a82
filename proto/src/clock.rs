//! The one wall clock both binaries stamp things with: milliseconds since
//! the Unix epoch, as events carry them (`Event::time_ms`) and the host
//! stores them. Reading the clock is the only thing here that is not pure.

/// Now, in milliseconds since the Unix epoch (0 on a clock set before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock that reads earlier is broken or not read.
        assert!(super::now_ms() > 1_767_225_600_000);
    }
}
