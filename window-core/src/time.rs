//! Millisecond timestamps: strict RFC 3339 parsing, epoch milliseconds and UTC formatting.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

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
        if let Some(ts) = parse_utc_fast(text.as_bytes()) {
            return Ok(ts);
        }
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

/// The fast path for the most common form, `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` in UTC (either case of
/// `T` and `Z`). Returns `None` for anything else, including invalid dates, which the strict
/// parser then handles (and explains). It pays: the general parser costs about ten times more,
/// and timestamp parsing dominated a large `process_window`.
fn parse_utc_fast(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 || !matches!(b[b.len() - 1], b'Z' | b'z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Leap seconds and every out-of-range field go to the strict parser.
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let mut ms = 0;
            for (i, &c) in digits.iter().enumerate() {
                if !c.is_ascii_digit() {
                    return None;
                }
                if i < 3 {
                    ms = ms * 10 + i64::from(c - b'0');
                }
            }
            // Floors: digits past the third are dropped, short fractions are scaled up.
            ms * 10i64.pow(3u32.saturating_sub(digits.len() as u32))
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(Timestamp(
        ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis,
    ))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

/// A timestamp that could not be parsed or has no RFC 3339 form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text is not an RFC 3339 date-time.
    #[error("invalid timestamp {text:?}: {reason}")]
    Invalid {
        /// The text as given.
        text: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The value is outside years 0000..=9999.
    #[error("timestamp {ms} ms is outside years 0000..=9999")]
    OutOfRange {
        /// Milliseconds since the epoch.
        ms: i64,
    },
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
    fn fast_path_agrees_with_the_strict_parser() {
        let strict = |text: &str| {
            OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .map(|dt| i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap())
        };
        let mut checked = 0;
        // Every day boundary over four centuries (leap years, century rules), plus fractions.
        let mut day = -62_167_219_200_000i64;
        while day < 253_402_300_799_999 {
            for (offset, fraction) in [
                (0, ""),
                (86_399_999, ".999"),
                (45_296_789, ".7891"),
                (1_000, ".0"),
            ] {
                // The whole seconds as `Display` writes them, then the fraction to parse.
                let seconds = Timestamp((day + offset).div_euclid(1000) * 1000).to_string();
                let text = format!("{}{fraction}Z", seconds.trim_end_matches('Z'));
                let fast = parse_utc_fast(text.as_bytes()).map(|t| t.0);
                assert_eq!(fast, strict(&text), "{text}");
                assert!(fast.is_some(), "{text} should take the fast path");
                checked += 1;
            }
            day += 86_400_000 * 23 + 3_600_000 * 5;
        }
        assert!(checked > 4_000);
        for text in [
            "2023-02-29T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-01-15T10:00:60Z",
            "2024-01-15T10:00:10.Z",
            "2024-01-15T10:00:10.1234567890Z",
            "2024-1-15T10:00:10Z",
            "+024-01-15T10:00:10Z",
        ] {
            assert_eq!(parse_utc_fast(text.as_bytes()), None, "{text}");
        }
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
