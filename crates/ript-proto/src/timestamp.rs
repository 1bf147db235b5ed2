//! Wall-clock timestamps as the profile writes them (ript-profile §5: RFC 3339, ms, `Z`).

use time::{OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};

/// Formats Unix-epoch milliseconds as `2026-11-23T18:57:00.123Z`.
pub fn format_ms(epoch_ms: u64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let nanos = i128::from(epoch_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Parses any RFC 3339 timestamp into Unix-epoch milliseconds.
pub fn parse_ms(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_milliseconds() {
        let s = format_ms(1_795_460_220_123);
        assert_eq!(s, "2026-11-23T18:57:00.123Z");
        assert_eq!(parse_ms(&s), Some(1_795_460_220_123));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
