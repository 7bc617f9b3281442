//! RFC 3339 timestamps as the log writes them: UTC, `Z`, fraction only when non-zero
//! and without trailing zeros (`2026-11-29T12:00:00.1234Z`).
//!
//! Formatting is on the hot path (three or four timestamps per record), so it writes
//! into a stack buffer instead of allocating; parsing accepts any RFC 3339 offset.

use serde::{Deserializer, Serializer};
use time::OffsetDateTime;

/// Longest output: `9999-12-31T23:59:59.999999999Z`.
const MAX: usize = 30;

/// Formats `t` (converted to UTC) into `buf`, returning the used part.
pub fn format(t: OffsetDateTime, buf: &mut [u8; MAX]) -> &str {
    let t = t.to_offset(time::UtcOffset::UTC);
    // One calendar computation and one clock split: `month()` and `day()` each
    // recompute the month from the day of the year.
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, second, nanos) = t.to_hms_nano();
    let fields = [
        (year.clamp(0, 9999) as u32, 4, b'-'),
        (u32::from(u8::from(month)), 2, b'-'),
        (u32::from(day), 2, b'T'),
        (u32::from(hour), 2, b':'),
        (u32::from(minute), 2, b':'),
        (u32::from(second), 2, b'.'),
    ];
    let mut at = 0;
    for (value, width, separator) in fields {
        write_digits(value, &mut buf[at..at + width]);
        buf[at + width] = separator;
        at += width + 1;
    }
    // `at` is now just past the '.' after the seconds.
    let mut end = at - 1;
    if nanos != 0 {
        let mut digits = [0u8; 9];
        write_digits(nanos, &mut digits);
        let len = 9 - digits.iter().rev().take_while(|d| **d == b'0').count();
        buf[at..at + len].copy_from_slice(&digits[..len]);
        end = at + len;
    }
    buf[end] = b'Z';
    std::str::from_utf8(&buf[..=end]).expect("only ASCII digits and separators")
}

/// The last time formatted and its text: the records of one request share their
/// server time and `sent_at`, so each is formatted once per request, not per record.
#[derive(Debug, Default)]
pub struct Memo {
    time: Option<OffsetDateTime>,
    len: usize,
    buf: [u8; MAX],
}

impl Memo {
    /// [`format()`], reusing the text when `t` is the time formatted last.
    pub fn format(&mut self, t: OffsetDateTime) -> &str {
        if self.time != Some(t) {
            self.len = format(t, &mut self.buf).len();
            self.time = Some(t);
        }
        // The buffer only ever holds `format`'s ASCII output (or nothing yet).
        std::str::from_utf8(&self.buf[..self.len]).expect("only ASCII digits and separators")
    }
}

/// Writes `value` as exactly `out.len()` decimal digits, zero-padded.
fn write_digits(mut value: u32, out: &mut [u8]) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(format(*t, &mut [0; MAX]))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    time::serde::rfc3339::deserialize(d)
}

/// The same for `Option<OffsetDateTime>` (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        time::serde::rfc3339::option::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::format_description::well_known::Rfc3339;
    use time::macros::datetime;

    #[test]
    fn examples() {
        let mut buf = [0; MAX];
        assert_eq!(
            format(datetime!(2026-11-29 12:00 UTC), &mut buf),
            "2026-11-29T12:00:00Z"
        );
        assert_eq!(
            format(datetime!(2026-01-02 03:04:05.1234 UTC), &mut buf),
            "2026-01-02T03:04:05.1234Z"
        );
        assert_eq!(
            format(datetime!(2026-11-29 12:00:00.000001 +02:00), &mut buf),
            "2026-11-29T10:00:00.000001Z"
        );
    }

    #[test]
    fn a_memo_formats_again_when_the_time_changes() {
        let mut memo = Memo::default();
        let (a, b) = (
            datetime!(2026-11-29 12:00 UTC),
            datetime!(2026-11-29 12:00:01 UTC),
        );
        assert_eq!(memo.format(a), "2026-11-29T12:00:00Z");
        assert_eq!(memo.format(a), "2026-11-29T12:00:00Z");
        assert_eq!(memo.format(b), "2026-11-29T12:00:01Z");
        // The same instant at another offset is the same time, and the same text.
        assert_eq!(
            memo.format(datetime!(2026-11-29 14:00:01 +02:00)),
            "2026-11-29T12:00:01Z"
        );
    }

    proptest! {
        #[test]
        fn agrees_with_the_time_crate(secs in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap().replace_nanosecond(nanos).unwrap();
            let mut buf = [0; MAX];
            let ours = format(t, &mut buf).to_owned();
            prop_assert_eq!(OffsetDateTime::parse(&ours, &Rfc3339).unwrap(), t);
            prop_assert_eq!(ours, t.format(&Rfc3339).unwrap());
        }
    }
}
