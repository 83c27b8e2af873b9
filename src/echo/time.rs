//! ISO 8601 timestamps as the Echo API writes and reads them, with jiff:
//! UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` out; in, RFC 3339 (an optional
//! fraction, `Z` or a `±HH:MM` offset, real calendar dates only).
//! Milliseconds since the epoch inside.

/// Formats milliseconds since the epoch.
pub fn format(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(at) => format!("{at:.3}"),
        Err(_) => format!("{:.3}", jiff::Timestamp::MAX),
    }
}

/// Parses a timestamp into milliseconds since the epoch (`None` for
/// anything that is not a real instant at or after 1970).
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    // jiff takes Temporal's offsets up to ±25:59; RFC 3339's end at ±23:59.
    let offset_hours = text
        .len()
        .checked_sub(6)
        .and_then(|at| text.get(at..))
        .filter(|tz| tz.starts_with(['+', '-']) && tz.get(3..4) == Some(":"))
        .and_then(|tz| tz[1..3].parse::<u8>().ok());
    if offset_hours.is_some_and(|h| h > 23) {
        return None;
    }
    let at: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(at.as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        let t = parse("2026-11-22T20:45:01.250Z").unwrap();
        assert_eq!(format(t), "2026-11-22T20:45:01.250Z");
        assert_eq!(parse("2026-11-22T21:45:01.25+01:00"), Some(t));
        assert_eq!(
            parse("2024-02-29T12:00:00Z").map(format).as_deref(),
            Some("2024-02-29T12:00:00.000Z")
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-22T20:45:01",
            "2026-11-22T20:45:01.Z",
            "2026-02-31T00:00:00Z",
            "2026-11-22T20:45:01+25:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
