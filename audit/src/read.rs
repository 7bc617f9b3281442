//! Reading the log for the audit: segment lines in order, a borrowed view of each record,
//! and field lookup by dotted path (`user_id`, `properties.action_id`, `context.locale`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The part of a record the audit reads; the rest of the line is skipped unparsed.
#[derive(Deserialize)]
pub struct Rec<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub event_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub device_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub app_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub platform: Cow<'a, str>,
    #[serde(borrow, default)]
    pub region: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub timestamp_server: Cow<'a, str>,
    #[serde(default)]
    pub lateness_ms: i64,
    #[serde(borrow, default)]
    pub properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub context: Option<&'a RawValue>,
}

/// A quarantined record: its time, why it was rejected, and the event as kept.
#[derive(Deserialize)]
pub struct QuarantineRec<'a> {
    #[serde(borrow)]
    pub timestamp_server: Cow<'a, str>,
    #[serde(borrow, default)]
    pub error: Option<Rejection<'a>>,
    #[serde(borrow, default)]
    pub event: Option<&'a RawValue>,
}

/// A quarantined record's error.
#[derive(Deserialize)]
pub struct Rejection<'a> {
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    #[serde(borrow, default)]
    pub path: Cow<'a, str>,
}

/// A field's value as the checks see it, borrowed from the record where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Missing,
    Null,
    Empty,
    Text(Cow<'a, str>),
    Number(f64),
    /// An object, array or boolean, as JSON text.
    Other(&'a str),
}

impl FieldValue<'_> {
    /// Text for comparisons (numbers and booleans as written).
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            FieldValue::Text(s) => Some(Cow::Borrowed(s.as_ref())),
            FieldValue::Other(s) => Some(Cow::Borrowed(s)),
            FieldValue::Number(n) => Some(Cow::Owned(n.to_string())),
            FieldValue::Empty => Some(Cow::Borrowed("")),
            FieldValue::Missing | FieldValue::Null => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(
            self,
            FieldValue::Missing | FieldValue::Null | FieldValue::Empty
        )
    }
}

/// The members of a JSON object, unparsed.
type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// Field lookup on one record; `properties` and `context` are split once, on first use.
pub struct Fields<'r, 'a> {
    rec: &'r Rec<'a>,
    properties: Option<Members<'a>>,
    context: Option<Members<'a>>,
}

impl<'r, 'a> Fields<'r, 'a> {
    pub fn new(rec: &'r Rec<'a>) -> Self {
        Fields {
            rec,
            properties: None,
            context: None,
        }
    }

    pub fn get(&mut self, path: &str) -> FieldValue<'a> {
        let text = |v: Option<&Cow<'a, str>>| match v {
            None => FieldValue::Missing,
            Some(s) if s.is_empty() => FieldValue::Empty,
            Some(Cow::Borrowed(s)) => FieldValue::Text(Cow::Borrowed(s)),
            Some(Cow::Owned(s)) => FieldValue::Text(Cow::Owned(s.clone())),
        };
        match path.split_once('.') {
            None => match path {
                "event_id" => text(Some(&self.rec.event_id)),
                "event_name" => text(Some(&self.rec.event_name)),
                "user_id" => text(self.rec.user_id.as_ref()),
                "device_id" => text(self.rec.device_id.as_ref()),
                "session_id" => text(self.rec.session_id.as_ref()),
                "app_version" => text(self.rec.app_version.as_ref()),
                "platform" => text(Some(&self.rec.platform)),
                "region" => text(self.rec.region.as_ref()),
                "source" => text(self.rec.source.as_ref()),
                _ => FieldValue::Missing,
            },
            Some(("properties", key)) => {
                let members = self
                    .properties
                    .get_or_insert_with(|| members(self.rec.properties));
                leaf(find(members, key))
            }
            Some(("context", key)) => {
                let members = self
                    .context
                    .get_or_insert_with(|| members(self.rec.context));
                leaf(find(members, key))
            }
            Some(_) => FieldValue::Missing,
        }
    }
}

fn members(raw: Option<&RawValue>) -> Members<'_> {
    struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de> serde::de::Visitor<'de> for Visitor<'de> {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            mut map: M,
        ) -> Result<Self::Value, M::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    raw.and_then(|r| {
        let mut de = serde_json::Deserializer::from_str(r.get());
        serde::Deserializer::deserialize_map(&mut de, Visitor(std::marker::PhantomData)).ok()
    })
    .unwrap_or_default()
}

fn find<'a>(members: &Members<'a>, key: &str) -> Option<&'a RawValue> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

pub fn leaf(raw: Option<&RawValue>) -> FieldValue<'_> {
    let Some(raw) = raw else {
        return FieldValue::Missing;
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => FieldValue::Null,
        Some(b'"') if text.len() == 2 => FieldValue::Empty,
        Some(b'"') if !text.contains('\\') => {
            FieldValue::Text(Cow::Borrowed(&text[1..text.len() - 1]))
        }
        Some(b'"') => serde_json::from_str::<String>(text)
            .map_or(FieldValue::Missing, |s| FieldValue::Text(Cow::Owned(s))),
        Some(b'-' | b'0'..=b'9') => text
            .parse()
            .map_or(FieldValue::Other(text), FieldValue::Number),
        _ => FieldValue::Other(text),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the log's own format, parsed by hand for speed),
/// else any RFC 3339 timestamp, as unix microseconds.
pub fn micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r)?.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let fast = (|| {
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
            return None;
        }
        let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        let mut micros = 0i64;
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let mut scale = 100_000;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                micros += i64::from(c - b'0') * scale;
                scale /= 10;
                i += 1;
            }
        }
        if b.get(i) != Some(&b'Z') || i + 1 != b.len() {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + micros)
    })();
    fast.or_else(|| {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        Some((t.unix_timestamp_nanos() / 1000) as i64)
    })
}

/// `2026-11-24T14:00:00Z` for unix µs (whole seconds).
pub fn format_time(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000)).map_or_else(
        |_| format!("{micros} µs"),
        |t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

/// `2026-11-24 14:00 UTC` for an hour index (hours since the epoch).
pub fn format_hour(hour: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(hour * 3600).map_or_else(
        |_| format!("hour {hour}"),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:00 UTC ({})",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.weekday()
            )
        },
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_timestamp_parser_agrees_with_the_rfc3339_one() {
        for text in [
            "2026-11-29T10:00:00.123456Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59.5Z",
            "2000-03-01T00:00:00.000001Z",
        ] {
            let reference =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            assert_eq!(
                micros(text),
                Some((reference.unix_timestamp_nanos() / 1000) as i64),
                "{text}"
            );
        }
        assert_eq!(
            micros("2026-11-29T11:00:00+01:00"),
            micros("2026-11-29T10:00:00Z")
        );
        assert_eq!(micros("yesterday"), None);
    }
}
