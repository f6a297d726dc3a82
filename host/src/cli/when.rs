//! Times as people read them: ages ("2 min ago") and durations ("1m 30s",
//! by `humantime`). The JSON forms keep RFC 3339 and seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Seconds within which a time in the future still reads "just now": one
/// process's clock a little ahead of another's.
const SKEW: i64 = 5;

/// An RFC 3339 time relative to `now`: `just now`, `45 s ago`,
/// `2 min ago`, `3 h ago`, `5 days ago`, or for a time ahead (a deadline)
/// `in 58 min`. Text that is not a time is returned as it is.
pub fn ago(stamp: &str, now: DateTime<Utc>) -> String {
    let Ok(then) = DateTime::parse_from_rfc3339(stamp) else {
        return stamp.to_string();
    };
    let secs = (now - then.with_timezone(&Utc)).num_seconds();
    if secs < -SKEW {
        format!("in {}", span(-secs))
    } else if secs <= 0 {
        "just now".into()
    } else {
        format!("{} ago", span(secs))
    }
}

/// A positive number of seconds in its largest whole unit.
fn span(secs: i64) -> String {
    match secs {
        ..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h", secs / 3600),
        86400..172800 => "1 day".into(),
        _ => format!("{} days", secs / 86400),
    }
}

/// A duration in seconds: tenths below ten seconds (`4.2s`), whole seconds
/// above in units (`1m 30s`, `2h 5m 3s`).
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".into();
    }
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    humantime::format_duration(Duration::from_secs(seconds.round() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ages_read_as_people_say_them() {
        let now = at("2026-03-01T12:00:00Z");
        for (stamp, said) in [
            ("2026-03-01T12:00:00.000Z", "just now"),
            ("2026-03-01T12:00:05Z", "just now"),
            ("2026-03-01T12:58:30Z", "in 58 min"),
            ("2026-03-01T11:59:15Z", "45 s ago"),
            ("2026-03-01T11:58:00Z", "2 min ago"),
            ("2026-03-01T09:00:00Z", "3 h ago"),
            ("2026-02-28T11:00:00Z", "1 day ago"),
            ("2026-02-24T12:00:00Z", "5 days ago"),
            ("yesterday", "yesterday"),
        ] {
            assert_eq!(ago(stamp, now), said, "{stamp}");
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(4.23), "4.2s");
        assert_eq!(duration(90.4), "1m 30s");
        assert_eq!(duration(7503.0), "2h 5m 3s");
        assert_eq!(duration(-1.0), "?");
    }
}
