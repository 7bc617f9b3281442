//! What the collector writes: the accepted [`Record`] and the [`QuarantineRecord`].
//!
//! Both are one JSON object per line (NDJSON). The record is the event exactly as
//! validated, flattened, followed by the fields only the server can vouch for.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::EventError;
use crate::event::Event;

/// When an event arrived relative to when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Within the allowed lateness.
    OnTime,
    /// Older than the allowed lateness (offline devices, stuck queues).
    Late,
    /// Ahead of the server clock by more than the tolerance, even after skew correction.
    Future,
}

impl Arrival {
    pub fn as_str(self) -> &'static str {
        match self {
            Arrival::OnTime => "on_time",
            Arrival::Late => "late",
            Arrival::Future => "future",
        }
    }
}

/// Whether the idempotency store vouched for this record being the first copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dedupe {
    /// Claimed in the idempotency store: the first copy within the dedupe window.
    Checked,
    /// Not checked (store unavailable under `fail_open`, or no client id to check).
    Unchecked,
}

/// Which API the event came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Native,
    Segment,
    #[serde(rename = "posthog")]
    PostHog,
    Snowplow,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Native => "native",
            Api::Segment => "segment",
            Api::PostHog => "posthog",
            Api::Snowplow => "snowplow",
        }
    }
}

/// The server-side timing of one event (see the reference: skew correction as Segment
/// and Snowplow apply it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `timestamp_server - sent_at`, when the client sent `sent_at`.
    pub clock_skew_ms: Option<i64>,
    /// `timestamp_event` corrected by the clock skew.
    pub timestamp_derived: OffsetDateTime,
    /// `timestamp_server - timestamp_derived`.
    pub lateness_ms: i64,
    pub arrival: Arrival,
}

/// A client's times that cannot be corrected for skew without leaving the years a
/// timestamp can be written in (`timestamp_event` 9999-06-01 with `sent_at` 1990-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event time corrected by the client's clock skew is outside the years 0000 to 9999")]
pub struct OutOfRange;

impl Timing {
    /// Computes the timing of an event received at `server`.
    ///
    /// Every operand but `server` comes from the client, so the arithmetic is checked:
    /// nothing a client sends can make it panic.
    ///
    /// # Errors
    /// [`OutOfRange`] when the skew-corrected time leaves the writable years.
    pub fn compute(
        timestamp_event: OffsetDateTime,
        sent_at: Option<OffsetDateTime>,
        server: OffsetDateTime,
        allowed_lateness: Duration,
        future_tolerance: Duration,
    ) -> Result<Timing, OutOfRange> {
        // Differences of two writable timestamps fit a `time::Duration` (±10 000 years
        // in seconds is far inside i64); only the sum can leave the writable years.
        let skew = sent_at.map(|sent| server - sent);
        let timestamp_derived = match skew {
            Some(skew) => timestamp_event.checked_add(skew).ok_or(OutOfRange)?,
            None => timestamp_event,
        };
        if !crate::event::in_writable_range(timestamp_derived) {
            return Err(OutOfRange);
        }
        let lateness = server - timestamp_derived;
        let arrival = if -lateness > future_tolerance {
            Arrival::Future
        } else if lateness > allowed_lateness {
            Arrival::Late
        } else {
            Arrival::OnTime
        };
        Ok(Timing {
            clock_skew_ms: skew.map(|d| saturating_ms(d.whole_milliseconds())),
            timestamp_derived,
            lateness_ms: saturating_ms(lateness.whole_milliseconds()),
            arrival,
        })
    }
}

fn saturating_ms(ms: i128) -> i64 {
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// One accepted event as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<'a> {
    #[serde(flatten)]
    pub event: Cow<'a, Event>,
    /// When the collector received the request (server clock, µs precision).
    #[serde(with = "crate::timefmt")]
    pub timestamp_server: OffsetDateTime,
    /// The client's own send time, as the client claimed it.
    #[serde(with = "crate::timefmt::option")]
    pub sent_at: Option<OffsetDateTime>,
    pub clock_skew_ms: Option<i64>,
    #[serde(with = "crate::timefmt")]
    pub timestamp_derived: OffsetDateTime,
    pub lateness_ms: i64,
    pub arrival: Arrival,
    /// The source's id (never its write key).
    pub source: Cow<'a, str>,
    pub region: Cow<'a, str>,
    /// `id@version` of the privacy policy applied, if any.
    pub privacy_policy: Option<Cow<'a, str>>,
    /// Id of the HMAC key the pseudonyms in this record were made with.
    pub privacy_key: Option<Cow<'a, str>>,
    /// During a key rotation: the same pseudonyms made with the previous keys
    /// (key id → field → pseudonym), so joins across the rotation still work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonyms_previous: Option<serde_json::Map<String, Value>>,
    pub dedupe: Dedupe,
    pub api: Api,
    /// Server-generated id of the HTTP request, shared by all events of one batch.
    pub request_id: Cow<'a, str>,
    pub collector_version: Cow<'a, str>,
    /// The id of the set of schemas that validated the event (12 hex digits of a
    /// digest of the schemas: the same on every replica with the same files, and
    /// changed by every reload that changed a schema). Absent in records logged before
    /// it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_set: Option<Cow<'a, str>>,
    /// A record logged by `tollgate-collector replay` from the quarantine: when, and
    /// the quarantine record it came from (`<request_id>/<index>`). Its
    /// `timestamp_server` is the original one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    pub replayed_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<Cow<'a, str>>,
}

/// The server's fields of a [`Record`], in its order: what follows the event's own.
#[derive(Serialize)]
struct ServerFields<'r> {
    #[serde(with = "crate::timefmt")]
    timestamp_server: OffsetDateTime,
    #[serde(with = "crate::timefmt::option")]
    sent_at: Option<OffsetDateTime>,
    clock_skew_ms: Option<i64>,
    #[serde(with = "crate::timefmt")]
    timestamp_derived: OffsetDateTime,
    lateness_ms: i64,
    arrival: Arrival,
    source: &'r str,
    region: &'r str,
    privacy_policy: Option<&'r str>,
    privacy_key: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pseudonyms_previous: &'r Option<serde_json::Map<String, Value>>,
    dedupe: Dedupe,
    api: Api,
    request_id: &'r str,
    collector_version: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_set: Option<&'r str>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::option"
    )]
    replayed_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_of: Option<&'r str>,
}

impl Record<'_> {
    /// Appends the record as one JSON object, the same bytes as its `Serialize`, without
    /// the cost of `#[serde(flatten)]` (which routes every field through a generic map):
    /// the event is written as its own object, whose closing brace becomes the comma
    /// before the server's fields.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Every field named: a field added to `Record` does not compile here until it
        // is written too.
        let Record {
            event,
            timestamp_server,
            sent_at,
            clock_skew_ms,
            timestamp_derived,
            lateness_ms,
            arrival,
            source,
            region,
            privacy_policy,
            privacy_key,
            pseudonyms_previous,
            dedupe,
            api,
            request_id,
            collector_version,
            schema_set,
            replayed_at,
            replay_of,
        } = self;
        serde_json::to_writer(&mut *out, event.as_ref()).expect("events serialize");
        debug_assert_eq!(out.last(), Some(&b'}'));
        out.pop();
        let at = out.len();
        let tail = ServerFields {
            timestamp_server: *timestamp_server,
            sent_at: *sent_at,
            clock_skew_ms: *clock_skew_ms,
            timestamp_derived: *timestamp_derived,
            lateness_ms: *lateness_ms,
            arrival: *arrival,
            source,
            region,
            privacy_policy: privacy_policy.as_deref(),
            privacy_key: privacy_key.as_deref(),
            pseudonyms_previous,
            dedupe: *dedupe,
            api: *api,
            request_id,
            collector_version,
            schema_set: schema_set.as_deref(),
            replayed_at: *replayed_at,
            replay_of: replay_of.as_deref(),
        };
        serde_json::to_writer(&mut *out, &tail).expect("records serialize");
        // An event object always has fields, so the event's `}` became a `,`.
        out[at] = b',';
    }
}

/// One rejected event as written to the quarantine log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord<'a> {
    #[serde(with = "crate::timefmt")]
    pub timestamp_server: OffsetDateTime,
    pub source: Cow<'a, str>,
    pub api: Api,
    pub request_id: Cow<'a, str>,
    /// Position of the event in its request.
    pub index: usize,
    pub error: EventError,
    /// The event as received (raw JSON text when it was not valid JSON), after the
    /// privacy policy's drops, pseudonyms and scrubs.
    pub event: Cow<'a, Value>,
    pub collector_version: Cow<'a, str>,
    /// The privacy policy applied to `event` (`id@version`; `null`: none was), its
    /// region, and the id of the key its pseudonyms were made with: what a replay needs to log it as
    /// it would have been, without pseudonymizing twice. Absent in records written
    /// before they existed (`None`), which is not the same as `Some(None)`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub privacy_policy: Option<Option<Cow<'a, str>>>,
    /// The region whose policy that was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_key: Option<Cow<'a, str>>,
}

/// A field that is present, as `Some` of its value (`null` included).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn skew_correction_moves_the_event_by_the_client_clock_error() {
        // The device clock is 10 minutes behind: it says it sent at 11:50, the server
        // received at 12:00. The event happened 1 minute before sending.
        let t = Timing::compute(
            datetime!(2026-11-29 11:49 UTC),
            Some(datetime!(2026-11-29 11:50 UTC)),
            datetime!(2026-11-29 12:00 UTC),
            HOUR,
            MINUTE,
        )
        .unwrap();
        assert_eq!(t.clock_skew_ms, Some(600_000));
        assert_eq!(t.timestamp_derived, datetime!(2026-11-29 11:59 UTC));
        assert_eq!(t.lateness_ms, 60_000);
        assert_eq!(t.arrival, Arrival::OnTime);
    }

    #[test]
    fn arrival_classes() {
        let server = datetime!(2026-11-29 12:00 UTC);
        let late =
            Timing::compute(datetime!(2026-11-29 10:00 UTC), None, server, HOUR, MINUTE).unwrap();
        assert_eq!((late.arrival, late.lateness_ms), (Arrival::Late, 7_200_000));
        let future =
            Timing::compute(datetime!(2026-11-29 12:05 UTC), None, server, HOUR, MINUTE).unwrap();
        assert_eq!(future.arrival, Arrival::Future);
        let edge =
            Timing::compute(datetime!(2026-11-29 12:01 UTC), None, server, HOUR, MINUTE).unwrap();
        assert_eq!(edge.arrival, Arrival::OnTime);
        // A clock far ahead is corrected by sent_at and is then on time.
        let corrected = Timing::compute(
            datetime!(2026-11-30 12:00 UTC),
            Some(datetime!(2026-11-30 12:00 UTC)),
            server,
            HOUR,
            MINUTE,
        )
        .unwrap();
        assert_eq!(corrected.arrival, Arrival::OnTime);
        assert_eq!(corrected.clock_skew_ms, Some(-86_400_000));
    }

    #[test]
    fn extreme_client_times_are_an_error_not_a_panic() {
        let server = datetime!(2026-11-29 12:00 UTC);
        // The event is near the end of year 9999 and the client's clock claims 1990:
        // correcting by 37 years of skew would leave the writable years.
        let far = Timing::compute(
            datetime!(9999-06-01 00:00 UTC),
            Some(datetime!(1990-01-01 00:00 UTC)),
            server,
            HOUR,
            MINUTE,
        );
        assert_eq!(far, Err(OutOfRange));
        let early = Timing::compute(
            datetime!(0000-01-01 00:00 UTC),
            Some(datetime!(9999-01-01 00:00 UTC)),
            server,
            HOUR,
            MINUTE,
        );
        assert_eq!(early, Err(OutOfRange));
        // The far ends themselves, without skew, are fine.
        let end = Timing::compute(
            datetime!(9999-12-31 23:59:59 UTC),
            None,
            server,
            HOUR,
            MINUTE,
        )
        .unwrap();
        assert_eq!(end.arrival, Arrival::Future);
    }

    #[test]
    fn written_records_are_the_serialized_bytes() {
        let text = r#"{"event_id":"evt-00000001","event_name":"item_view","schema_version":2,
            "user_id":"u\"1","timestamp_event":"2026-11-29T10:00:00.25Z","platform":"ios",
            "context":{"locale":"en-GB","nested":{"a":[1,2.5,null]}},"properties":{"é":"ü\n"}}"#;
        let event = crate::parse_event_text(text.as_bytes(), &crate::Platforms::default())
            .unwrap()
            .0;
        let mut previous = serde_json::Map::new();
        previous.insert("k0".into(), serde_json::json!({"user_id": "abc"}));
        for (sent_at, previous, policy) in [
            (None, None, None),
            (
                Some(datetime!(2026-11-29 10:00:01 UTC)),
                Some(previous),
                Some("uk_gdpr@1"),
            ),
        ] {
            let record = Record {
                event: Cow::Borrowed(&event),
                timestamp_server: datetime!(2026-11-29 10:00:02.123456 UTC),
                sent_at,
                clock_skew_ms: sent_at.map(|_| 1_123),
                timestamp_derived: datetime!(2026-11-29 10:00:01.373456 UTC),
                lateness_ms: 1_873,
                arrival: Arrival::OnTime,
                source: "app".into(),
                region: "uk".into(),
                privacy_policy: policy.map(Cow::Borrowed),
                privacy_key: policy.map(|_| Cow::Borrowed("k1")),
                pseudonyms_previous: previous,
                dedupe: Dedupe::Checked,
                api: Api::Native,
                request_id: "r-1".into(),
                collector_version: "0.1.0".into(),
                schema_set: Some("0123456789ab".into()),
                replayed_at: None,
                replay_of: None,
            };
            let mut written = b"[before]".to_vec();
            record.write_json(&mut written);
            let mut expected = b"[before]".to_vec();
            expected.extend(serde_json::to_vec(&record).unwrap());
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
