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

impl Dedupe {
    pub fn as_str(self) -> &'static str {
        match self {
            Dedupe::Checked => "checked",
            Dedupe::Unchecked => "unchecked",
        }
    }
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

impl Record<'_> {
    /// Appends the record as one JSON object: the same bytes as its `Serialize`,
    /// written field by field with [`crate::json`] (no `#[serde(flatten)]`, which
    /// routes every field through a generic map, and strings copied whole unless they
    /// need an escape).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(out, &mut SharedTimes::default());
    }

    /// [`Record::write_json`] for one of several records of a request, which share
    /// their server time and `sent_at`: `shared` formats each once.
    pub fn write_json_with(&self, out: &mut Vec<u8>, shared: &mut SharedTimes) {
        use crate::json::{Object, write_array, write_map, write_str};
        // Every field named: a field added to `Record` (or `Event`) does not compile
        // here until it is written too.
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
        let Event {
            event_id,
            event_name,
            schema_version,
            user_id,
            device_id,
            session_id,
            timestamp_event,
            surface,
            app_version,
            platform,
            experiment_ids,
            consent,
            context,
            properties,
        } = event.as_ref();
        let mut o = Object::open(out);
        o.str("event_id", Some(event_id));
        o.str("event_name", Some(event_name));
        o.int("schema_version", Some(*schema_version));
        o.str("user_id", user_id.as_deref());
        o.str("device_id", device_id.as_deref());
        o.str("session_id", session_id.as_deref());
        o.time("timestamp_event", Some(*timestamp_event));
        o.str("surface", surface.as_deref());
        o.str("app_version", app_version.as_deref());
        o.str("platform", Some(platform));
        write_array(o.key("experiment_ids"), experiment_ids, |out, id| {
            write_str(out, id)
        });
        let mut granted = Object::open(o.key("consent"));
        for (category, yes) in consent {
            granted
                .any_key(category)
                .extend_from_slice(if *yes { b"true" } else { b"false" });
        }
        granted.close();
        write_map(o.key("context"), context);
        write_map(o.key("properties"), properties);
        o.time_text(
            "timestamp_server",
            Some(shared.server.format(*timestamp_server)),
        );
        o.time_text("sent_at", sent_at.map(|t| shared.sent_at.format(t)));
        o.int("clock_skew_ms", *clock_skew_ms);
        o.time("timestamp_derived", Some(*timestamp_derived));
        o.int("lateness_ms", Some(*lateness_ms));
        o.str("arrival", Some(arrival.as_str()));
        o.str("source", Some(source));
        o.str("region", Some(region));
        o.str("privacy_policy", privacy_policy.as_deref());
        o.str("privacy_key", privacy_key.as_deref());
        if let Some(previous) = pseudonyms_previous {
            write_map(o.key("pseudonyms_previous"), previous);
        }
        o.str("dedupe", Some(dedupe.as_str()));
        o.str("api", Some(api.as_str()));
        o.str("request_id", Some(request_id));
        o.str("collector_version", Some(collector_version));
        if let Some(set) = schema_set {
            o.str("schema_set", Some(set));
        }
        if let Some(at) = replayed_at {
            o.time("replayed_at", Some(*at));
        }
        if let Some(of) = replay_of {
            o.str("replay_of", Some(of));
        }
        o.close();
    }
}

/// The times a request's records share, each formatted once ([`Record::write_json_with`]).
#[derive(Debug, Default)]
pub struct SharedTimes {
    server: crate::timefmt::Memo,
    sent_at: crate::timefmt::Memo,
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

    proptest::proptest! {
        #[test]
        fn written_records_are_the_serialized_bytes_for_any_strings(
            texts in proptest::collection::vec("\\PC{0,12}|[\"\\\\\\x00-\\x1f]{0,4}", 12),
            numbers in proptest::collection::vec(proptest::prelude::any::<i64>(), 3),
            flags in proptest::collection::vec(proptest::prelude::any::<bool>(), 4),
            kinds in (0usize..3, 0usize..4, 0usize..2),
        ) {
            let arrival = [Arrival::OnTime, Arrival::Late, Arrival::Future][kinds.0];
            let api = [Api::Native, Api::Segment, Api::PostHog, Api::Snowplow][kinds.1];
            let dedupe = [Dedupe::Checked, Dedupe::Unchecked][kinds.2];
            let text = |i: usize| texts[i].clone();
            let maybe = |i: usize| flags[i % 4].then(|| text(i));
            let map = |i: usize| {
                let mut m = serde_json::Map::new();
                m.insert(text(i), Value::String(text(i + 1)));
                m.insert(text(i + 2), Value::from(numbers[i % 3]));
                m
            };
            let event = Event {
                event_id: text(0),
                event_name: text(1),
                schema_version: numbers[0].unsigned_abs() as u32,
                user_id: maybe(2),
                device_id: maybe(3),
                session_id: maybe(4),
                timestamp_event: OffsetDateTime::from_unix_timestamp(numbers[1].rem_euclid(253_402_300_799)).unwrap(),
                surface: maybe(5),
                app_version: maybe(6),
                platform: text(7),
                experiment_ids: vec![text(8), text(9)],
                consent: [(text(10), flags[0]), (text(11), flags[1])].into_iter().collect(),
                context: map(0),
                properties: map(3),
            };
            let record = Record {
                event: Cow::Borrowed(&event),
                timestamp_server: datetime!(2026-11-29 10:00:02.123456 UTC),
                sent_at: flags[2].then_some(datetime!(2026-11-29 10:00:01 UTC)),
                clock_skew_ms: flags[3].then_some(numbers[2]),
                timestamp_derived: datetime!(2026-11-29 10:00:01.373456 UTC),
                lateness_ms: numbers[2],
                arrival,
                source: text(0).into(),
                region: text(1).into(),
                privacy_policy: maybe(2).map(Cow::Owned),
                privacy_key: maybe(3).map(Cow::Owned),
                pseudonyms_previous: flags[1].then(|| map(6)),
                dedupe,
                api,
                request_id: text(4).into(),
                collector_version: text(5).into(),
                schema_set: maybe(6).map(Cow::Owned),
                replayed_at: flags[0].then_some(datetime!(2026-11-30 00:00 UTC)),
                replay_of: maybe(7).map(Cow::Owned),
            };
            let mut written = Vec::new();
            record.write_json(&mut written);
            proptest::prop_assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
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
        // One memo across records whose shared times change (as a replay's do), so a
        // stale text would show.
        let mut shared = SharedTimes::default();
        let (first, later) = (
            datetime!(2026-11-29 10:00:02.123456 UTC),
            datetime!(2026-11-29 10:00:03 UTC),
        );
        for (server, sent_at, previous, policy) in [
            (first, None, None, None),
            (
                first,
                Some(datetime!(2026-11-29 10:00:01 UTC)),
                Some(previous.clone()),
                Some("uk_gdpr@1"),
            ),
            (
                later,
                Some(datetime!(2026-11-29 10:00:02 UTC)),
                Some(previous),
                None,
            ),
        ] {
            let record = Record {
                event: Cow::Borrowed(&event),
                timestamp_server: server,
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
            record.write_json_with(&mut written, &mut shared);
            let mut expected = b"[before]".to_vec();
            expected.extend(serde_json::to_vec(&record).unwrap());
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
