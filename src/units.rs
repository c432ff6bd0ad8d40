//! Time as remora writes it: RFC 3339 for people and JSON, milliseconds
//! since 1970 for samples. A leaf: it knows nothing of remora's domain.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock time as RFC 3339, or `None` for one RFC 3339 cannot write
/// (before 1970 or after 9999, a clock set wrong): never a panic.
pub fn rfc3339(time: SystemTime) -> Option<String> {
    /// 10000-01-01T00:00:00Z.
    const END: Duration = Duration::from_secs(253_402_300_800);
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    (since_epoch < END).then(|| humantime::format_rfc3339_millis(time).to_string())
}

/// Milliseconds since 1970 as RFC 3339, as [`rfc3339`].
pub fn rfc3339_ms(at_ms: u64) -> Option<String> {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(at_ms))
        .and_then(rfc3339)
}

/// Milliseconds since 1970 (0 for a clock set before it).
pub fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clocks_out_of_rfc3339_range_render_as_nothing() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(86400)).as_deref(),
            Some("1970-01-02T00:00:00.000Z")
        );
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), None);
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339(year_10000), None);
        assert!(rfc3339(year_10000 - Duration::from_secs(1)).is_some());
        assert!(rfc3339(SystemTime::now()).is_some());
    }

    #[test]
    fn milliseconds_out_of_range_are_none_or_zero_not_a_panic() {
        assert_eq!(rfc3339_ms(u64::MAX), None);
        assert_eq!(millis_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
