//! RFC 3339 text of a millisecond instant, computed here with Howard Hinnant's
//! `civil_from_days`, independently of `window-core`'s formatting: the tests and the benchmarks
//! compare what the node writes with it, and the generated workloads write their timestamps
//! with it, so it must not be the code it checks.

use std::fmt::Write as _;

/// Appends `ms` (milliseconds since the Unix epoch) as RFC 3339 at `offset_min` minutes from
/// UTC, as the protocol writes timestamps: milliseconds only when not zero, `Z` for UTC
/// (`2024-01-15T08:00:01.250Z`, `2024-01-15T10:00:01+02:00`).
pub fn write_rfc3339(out: &mut String, ms: i64, offset_min: i64) {
    let local = ms + offset_min * 60_000;
    let secs = local.div_euclid(1000);
    let millis = local.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if millis != 0 {
        let _ = write!(out, ".{millis:03}");
    }
    if offset_min == 0 {
        out.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let abs = offset_min.abs();
        let _ = write!(out, "{sign}{:02}:{:02}", abs / 60, abs % 60);
    }
}

/// `ms` as RFC 3339 in UTC (see [`write_rfc3339`]).
pub fn utc(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(&mut out, ms, 0);
    out
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_705_305_600_000), "2024-01-15T08:00:00Z");
        assert_eq!(utc(1_705_305_601_250), "2024-01-15T08:00:01.250Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
        let mut offset = String::new();
        write_rfc3339(&mut offset, 1_705_312_810_000, 120);
        assert_eq!(offset, "2024-01-15T12:00:10+02:00");
        write_rfc3339(&mut offset, 0, -90);
        assert_eq!(&offset[25..], "1969-12-31T22:30:00-01:30");
        assert_eq!(civil_from_days(19_737), (2024, 1, 15));
    }
}
