//! Millisecond timestamps: strict RFC 3339 parsing, epoch milliseconds and UTC formatting.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
        Timestamp::parse_rfc3339_memo(text, &mut DateMemo::default())
    }

    /// [`parse_rfc3339`](Timestamp::parse_rfc3339), remembering the date part in `memo`: the
    /// times of a stream mostly share their date with the one before, and the date (checking it
    /// and counting its days) is about half of the work. The result is the same with any memo.
    pub fn parse_rfc3339_memo(
        text: &str,
        memo: &mut DateMemo,
    ) -> Result<Timestamp, TimestampError> {
        if let Some(ts) = parse_fast(text.as_bytes(), memo) {
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
        // `time` takes a leap second at the end of a UTC month as 23:59:59.999999999 and refuses
        // every other one with no reason; a millisecond count has no leap seconds, so every
        // `:60` is refused, with a reason.
        if text.get(16..19) == Some(":60") && text.as_bytes().get(13) == Some(&b':') {
            return Err(bad(
                "leap seconds (23:59:60) are not supported; use 23:59:59.999 or epoch milliseconds",
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

    /// The RFC 3339 text [`Display`](fmt::Display) writes, on the stack (no formatter): UTC,
    /// `.mmm` only when the milliseconds are not zero. `None` outside years 0000..=9999, which
    /// have no RFC 3339 form. Every fired window renders two of these.
    pub fn rfc3339(self) -> Option<Rfc3339Text> {
        if !(MIN_MS..=MAX_MS).contains(&self.0) {
            return None;
        }
        let days = self.0.div_euclid(86_400_000);
        let in_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let mut bytes = [0u8; 24];
        let digits = |out: &mut [u8], value: u32| {
            let mut value = value;
            for slot in out.iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        // In range, so 0 <= year <= 9999 and the other fields fit their digits.
        digits(&mut bytes[0..4], year as u32);
        bytes[4] = b'-';
        digits(&mut bytes[5..7], month);
        bytes[7] = b'-';
        digits(&mut bytes[8..10], day);
        bytes[10] = b'T';
        let seconds = (in_day / 1000) as u32;
        digits(&mut bytes[11..13], seconds / 3600);
        bytes[13] = b':';
        digits(&mut bytes[14..16], seconds / 60 % 60);
        bytes[16] = b':';
        digits(&mut bytes[17..19], seconds % 60);
        let ms = (in_day % 1000) as u32;
        let len = if ms != 0 {
            bytes[19] = b'.';
            digits(&mut bytes[20..23], ms);
            bytes[23] = b'Z';
            24
        } else {
            bytes[19] = b'Z';
            20
        };
        Some(Rfc3339Text { bytes, len })
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

/// The fast path for the common forms, `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` then `Z` or `±HH:MM`
/// (either case of `T` and `Z`). Returns `None` for anything else, including invalid dates and
/// offsets, which the strict parser then handles (and explains). It pays: the general parser
/// costs about ten times more, and timestamp parsing dominated a large `process_window` and a
/// file of events at offsets.
fn parse_fast(b: &[u8], memo: &mut DateMemo) -> Option<Timestamp> {
    let (b, offset_ms) = match *b.last()? {
        b'Z' | b'z' => (&b[..b.len() - 1], 0),
        _ if b.len() >= 25 => {
            let (body, zone) = b.split_at(b.len() - 6);
            let sign = match zone[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if zone[3] != b':' {
                return None;
            }
            let (hours, minutes) = (two_digits(zone, 1)?, two_digits(zone, 4)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (body, sign * (hours * 60 + minutes) * 60_000)
        }
        _ => return None,
    };
    if b.len() < 19 {
        return None;
    }
    if !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = if memo.date.as_slice() == &b[..10] {
        memo.days
    } else {
        let days = date_days(b)?;
        memo.date.copy_from_slice(&b[..10]);
        memo.days = days;
        days
    };
    let (hour, minute, second) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    // Leap seconds and every out-of-range field go to the strict parser.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let mut ms = 0;
            for (i, &c) in digits.iter().enumerate() {
                let d = c.wrapping_sub(b'0');
                if d > 9 {
                    return None;
                }
                let d = i64::from(d);
                if i < 3 {
                    ms = ms * 10 + d;
                }
            }
            // Floors: digits past the third are dropped, short fractions are scaled up.
            ms * 10i64.pow(3u32.saturating_sub(digits.len() as u32))
        }
        _ => return None,
    };
    Some(Timestamp(
        ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis - offset_ms,
    ))
}

/// The last date [`Timestamp::parse_rfc3339_memo`] read (`YYYY-MM-DD`, valid) and its days
/// since 1970-01-01. A new memo holds no date (its bytes are not one).
#[derive(Clone, Copy, Debug, Default)]
pub struct DateMemo {
    date: [u8; 10],
    days: i64,
}

/// The days since 1970-01-01 of the date `YYYY-MM-DD` at the start of `b` (at least 10 bytes),
/// or `None` when it is not a valid date in that form.
fn date_days(b: &[u8]) -> Option<i64> {
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let (month, day) = (two_digits(b, 5)?, two_digits(b, 8)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// The number written by the two ASCII digits at `b[i..i + 2]` (the caller checked the length).
#[inline]
fn two_digits(b: &[u8], i: usize) -> Option<i64> {
    let (tens, ones) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
    (tens < 10 && ones < 10).then(|| i64::from(tens * 10 + ones))
}

#[inline]
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
#[inline]
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01): the inverse of
/// [`days_from_civil`] (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A timestamp's RFC 3339 text, from [`Timestamp::rfc3339`].
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339Text {
    /// ASCII digits and separators only.
    bytes: [u8; 24],
    /// 20 (whole seconds) or 24 (with `.mmm`).
    len: usize,
}

impl Rfc3339Text {
    /// The text's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("an RFC 3339 text is ASCII")
    }
}

impl fmt::Display for Timestamp {
    /// UTC, `2024-01-15T10:00:00Z`, with `.mmm` only when the milliseconds are not zero.
    ///
    /// Timestamps outside years 0000..=9999 have no RFC 3339 form and are written as `@<ms>`,
    /// so that formatting never panics; the node rejects them before they reach a reply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            Some(text) => f.write_str(text.as_str()),
            None => write!(f, "@{}", self.0),
        }
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
    fn leap_seconds_are_refused_with_a_plain_reason() {
        // The last one there was, and one that never was: both get the same reason.
        for text in [
            "2016-12-31T23:59:60Z",
            "2024-01-15T10:00:60Z",
            "2024-01-15T10:00:60.5+02:00",
        ] {
            let error = Timestamp::parse_rfc3339(text).expect_err(text).to_string();
            assert!(
                error.contains("leap seconds (23:59:60) are not supported")
                    && error.contains("23:59:59.999 or epoch milliseconds"),
                "{text}: {error}"
            );
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
    fn every_day_in_range_is_the_time_crates_date() {
        // Each of the 3.65 M days of years 0000-9999 (every leap and century rule) against the
        // time crate's calendar, by Julian day number.
        let (first, last) = (MIN_MS.div_euclid(86_400_000), MAX_MS.div_euclid(86_400_000));
        for days in first..=last {
            let date = time::Date::from_julian_day((days + 2_440_588) as i32).unwrap();
            assert_eq!(
                civil_from_days(days),
                (
                    i64::from(date.year()),
                    u32::from(u8::from(date.month())),
                    u32::from(date.day())
                ),
                "day {days}"
            );
        }
    }

    #[test]
    fn the_hand_written_text_is_the_time_crates() {
        // The time crate's own RFC 3339 writer; it writes the fewest fraction digits (`.32Z`),
        // `Display` three or none.
        let reference = |ms: i64| {
            let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            match dt.split_once('.') {
                Some((whole, fraction)) => {
                    let digits = fraction.trim_end_matches('Z');
                    format!("{whole}.{digits:0<3}Z")
                }
                None => dt,
            }
        };
        // Times of day (every field's carry) on days spread over the range, its ends included.
        let mut checked = 0;
        let mut day = MIN_MS;
        while day <= MAX_MS {
            for offset in [0, 1, 20, 999, 1_000, 59_999, 60_000, 3_599_999, 86_399_999] {
                let t = (day + offset).min(MAX_MS);
                assert_eq!(Timestamp(t).to_string(), reference(t), "{t}");
                checked += 1;
            }
            day += 86_400_000 * 1_097;
        }
        assert!(checked > 25_000);
        assert!(Timestamp(MIN_MS - 1).rfc3339().is_none());
        assert!(Timestamp(MAX_MS + 1).rfc3339().is_none());
        assert_eq!(Timestamp(MAX_MS).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(MIN_MS).to_string(), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn fast_path_agrees_with_the_strict_parser() {
        let strict = |text: &str| {
            OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .map(|dt| i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap())
        };
        let mut checked = 0;
        let mut memo = DateMemo::default();
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
                for zone in ["Z", "z", "+02:00", "-05:30", "+23:59", "-00:00"] {
                    let text = format!("{}{fraction}{zone}", seconds.trim_end_matches('Z'));
                    let fast = parse_fast(text.as_bytes(), &mut DateMemo::default()).map(|t| t.0);
                    // With the date remembered (from this very text) the answer is the same.
                    assert_eq!(
                        parse_fast(text.as_bytes(), &mut memo).map(|t| t.0),
                        fast,
                        "{text}"
                    );
                    assert_eq!(fast, strict(&text), "{text}");
                    assert!(fast.is_some(), "{text} should take the fast path");
                    checked += 1;
                }
            }
            day += 86_400_000 * 23 + 3_600_000 * 5;
        }
        assert!(checked > 24_000);
        for text in [
            "2024-01-15T10:00:10+24:00",
            "2024-01-15T10:00:10+02:60",
            "2024-01-15T10:00:10+0200",
            "2024-01-15T10:00:10 02:00",
            "2024-01-15T10:00:10+02-00",
            "2024-01-15T10:00:10.+02:00",
            "2023-02-29T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-01-15T10:00:60Z",
            "2024-01-15T10:00:10.Z",
            "2024-01-15T10:00:10.1234567890Z",
            "2024-1-15T10:00:10Z",
            "+024-01-15T10:00:10Z",
        ] {
            assert_eq!(
                parse_fast(text.as_bytes(), &mut DateMemo::default()),
                None,
                "{text}"
            );
            // A remembered date does not let a bad time through.
            let mut memo = DateMemo::default();
            let _ = parse_fast(b"2024-01-15T10:00:10Z", &mut memo);
            let _ = parse_fast(b"2023-02-28T10:00:10Z", &mut memo);
            assert_eq!(parse_fast(text.as_bytes(), &mut memo), None, "{text}");
        }
    }

    proptest::proptest! {
        /// Every timestamp with an RFC 3339 form reads back as itself, in the shape `Display`
        /// promises (the hand-written digits included).
        #[test]
        fn any_timestamp_round_trips_through_text(ms in MIN_MS..=MAX_MS) {
            let text = Timestamp::from_millis(ms).to_string();
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&text).unwrap().as_millis(), ms);
            proptest::prop_assert_eq!(text.len(), if ms.rem_euclid(1000) == 0 { 20 } else { 24 });
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
