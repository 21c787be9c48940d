//! Durations in settings: whole milliseconds, as the `*_MS` variables are named.

use std::time::Duration;

/// Parses a whole number of milliseconds greater than 0 (the `*_MS` settings): a zero timeout
/// would fail every call, so it is refused at start-up rather than at the first request.
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is not a whole number of milliseconds greater than 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_positive_milliseconds_only() {
        assert!(parse_millis("0").is_err());
        assert!(parse_millis("-1").is_err());
        assert!(parse_millis("1.5").is_err());
        assert!(parse_millis("18446744073709551616").is_err());
        assert_eq!(parse_millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_millis("18446744073709551615"),
            Ok(Duration::from_millis(u64::MAX))
        );
    }
}
