//! Millisecond timestamps: strict RFC 3339 parsing, epoch milliseconds and UTC formatting.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::error::TimestampError;

/// A point in time, in whole milliseconds since the Unix epoch (UTC).
///
/// Negative values are before 1970. Every timestamp the engine sees comes in as a value of this
/// type: the core never reads a clock, so windows mean the same thing after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// The smallest timestamp RFC 3339 can write (`0000-01-01T00:00:00Z`).
const MIN_MS: i64 = -62_167_219_200_000;
/// The largest timestamp the formatter can write (`9999-12-31T23:59:59.999Z`).
const MAX_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp of `ms` milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 date-time such as `2024-01-15T10:00:10.250+02:00`.
    ///
    /// Accepts `t`/`z` in lower case, any offset, and up to nine fraction digits, which are
    /// floored to the millisecond (toward minus infinity, also before 1970). Anything else, such
    /// as a missing offset, a space instead of `T` or an out-of-range field, is an error.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let bad = |reason: &'static str| TimestampError::Invalid {
            text: text.to_owned(),
            reason,
        };
        // `time` also accepts a space between date and time (RFC 3339's note allows it); the
        // wire contract does not.
        if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
            return Err(bad(
                "expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)",
            ));
        }
        // `time` accepts any number of fraction digits; the contract allows at most nine.
        if let Some(dot) = text.find('.') {
            let digits = text[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits > 9 {
                return Err(bad("more than 9 fraction digits"));
            }
        }
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|_| bad("expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)"))?;
        let nanos = parsed.unix_timestamp_nanos();
        let ms = nanos.div_euclid(1_000_000);
        let ms = i64::try_from(ms).map_err(|_| bad("out of range"))?;
        Ok(Timestamp(ms))
    }

    /// Checks that RFC 3339 can write this timestamp (years 0000 to 9999).
    pub fn check_formattable(self) -> Result<Timestamp, TimestampError> {
        if (MIN_MS..=MAX_MS).contains(&self.0) {
            Ok(self)
        } else {
            Err(TimestampError::OutOfRange { ms: self.0 })
        }
    }

    /// The timestamp `ms` milliseconds later, or `None` on overflow.
    pub fn checked_add(self, ms: i64) -> Option<Timestamp> {
        self.0.checked_add(ms).map(Timestamp)
    }

    /// The timestamp `ms` milliseconds earlier, or `None` on overflow.
    pub fn checked_sub(self, ms: i64) -> Option<Timestamp> {
        self.0.checked_sub(ms).map(Timestamp)
    }

    /// Milliseconds from `earlier` to `self`, saturating.
    pub fn saturating_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    /// UTC, `2024-01-15T10:00:00Z`, with `.mmm` only when the milliseconds are not zero.
    ///
    /// Timestamps outside years 0000..=9999 have no RFC 3339 form and are written as `@<ms>`,
    /// so that formatting never panics; the node rejects them before they reach a reply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        let dt = match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(dt) if (MIN_MS..=MAX_MS).contains(&self.0) => dt.to_offset(UtcOffset::UTC),
            _ => return write!(f, "@{}", self.0),
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        let ms = dt.millisecond();
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        Timestamp::parse_rfc3339(text).unwrap().as_millis()
    }

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(ms("2024-01-15T10:00:10Z"), 1_705_312_810_000);
        assert_eq!(ms("2024-01-15t10:00:10z"), 1_705_312_810_000);
        assert_eq!(ms("2024-01-15T12:00:10+02:00"), 1_705_312_810_000);
        assert_eq!(ms("2024-01-15T09:30:10-00:30"), 1_705_312_810_000);
        assert_eq!(ms("2024-01-15T10:00:10.250Z"), 1_705_312_810_250);
        assert_eq!(ms("2024-01-15T10:00:10.2509999Z"), 1_705_312_810_250);
        assert_eq!(ms("2024-01-15T10:00:10.123456789Z"), 1_705_312_810_123);
        assert_eq!(ms("2024-01-15T10:00:10.1Z"), 1_705_312_810_100);
    }

    #[test]
    fn floors_fractions_before_1970() {
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), -1);
        assert_eq!(ms("1969-12-31T23:59:59.9995Z"), -1);
        assert_eq!(ms("1969-12-31T23:59:59.0001Z"), -1000);
        assert_eq!(ms("1900-01-01T00:00:00Z"), -2_208_988_800_000);
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for text in [
            "2024-01-15 10:00:10Z",
            "2024-01-15T10:00:10",
            "2024-01-15T10:00Z",
            "2024-13-15T10:00:10Z",
            "2024-02-30T10:00:10Z",
            "2024-01-15T10:00:10.1234567891Z",
            "2024-01-15T10:00:10.Z",
            "2024-01-15T10:00:10+0200",
            "",
            "yesterday",
        ] {
            assert!(Timestamp::parse_rfc3339(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn formats_utc_with_millis_only_when_present() {
        let show = |ms: i64| Timestamp::from_millis(ms).to_string();
        assert_eq!(show(1_705_312_800_000), "2024-01-15T10:00:00Z");
        assert_eq!(show(1_705_312_800_250), "2024-01-15T10:00:00.250Z");
        assert_eq!(show(-60_000), "1969-12-31T23:59:00Z");
        assert_eq!(show(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(show(i64::MIN), format!("@{}", i64::MIN));
    }

    #[test]
    fn round_trips_through_text() {
        for ms in [
            0,
            -1,
            1,
            999,
            -86_400_001,
            1_705_312_810_250,
            MIN_MS,
            MAX_MS,
        ] {
            let text = Timestamp::from_millis(ms).to_string();
            assert_eq!(
                Timestamp::parse_rfc3339(&text).unwrap().as_millis(),
                ms,
                "{text}"
            );
        }
    }
}
