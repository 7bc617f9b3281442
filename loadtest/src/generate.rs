//! Seeded, SDK-like traffic: batches of native events from a Zipf-like population of
//! users, with SDK retries (the whole batch resent with the same ids), late events,
//! skewed device clocks and invalid events at configurable rates.
//!
//! The same seed gives the same traffic. Every event id starts with the run id, so a
//! reconciliation can tell this run's events from anything else in the log.

use std::collections::VecDeque;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write;

use time::OffsetDateTime;
use tollgate_event::timefmt;

/// What the traffic looks like. Read from a scenario file (TOML, every key optional;
/// `config/loadtest-scenario.toml` documents them) or built from the defaults.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Events per request.
    pub batch_size: usize,
    /// Distinct users; activity is Zipf-like (a few users send most events).
    pub users: u64,
    /// Share of requests that resend an earlier batch unchanged (SDK retries).
    pub retry_rate: f64,
    /// Share of events that break a rule (each kind of invalid event in turn).
    pub invalid_rate: f64,
    /// Share of events that happened hours ago (offline devices).
    pub late_rate: f64,
    /// Share of devices whose clock is off by minutes to hours.
    pub skewed_device_rate: f64,
    /// Share of requests sent with a write key the collector does not know (401).
    pub unknown_key_rate: f64,
    /// The protocol the traffic speaks: the native API, or one SDK family's.
    pub protocol: Protocol,
    /// Event names and their relative weights. `item_view`, `session_start` and
    /// `button_click` get realistic properties; any other name gets none.
    pub event_mix: std::collections::BTreeMap<String, u32>,
}

impl Scenario {
    /// Reads a scenario file.
    ///
    /// # Errors
    /// Unreadable, not TOML, an unknown key, or an empty or all-zero event mix.
    pub fn load(path: &std::path::Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let scenario: Scenario =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if scenario.event_mix.values().all(|w| *w == 0) {
            return Err(format!(
                "{}: event_mix needs at least one positive weight",
                path.display()
            ));
        }
        Ok(scenario)
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            batch_size: 20,
            users: 10_000,
            retry_rate: 0.02,
            invalid_rate: 0.01,
            late_rate: 0.02,
            skewed_device_rate: 0.05,
            unknown_key_rate: 0.0,
            protocol: Protocol::Native,
            event_mix: [("item_view", 7), ("session_start", 2), ("button_click", 1)]
                .into_iter()
                .map(|(name, weight)| (name.to_owned(), weight))
                .collect(),
        }
    }
}

/// The protocol of the generated traffic, each in the shape its SDKs send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Native batches to `/v1/events`.
    #[default]
    Native,
    /// Segment HTTP Tracking API batches to `/v1/batch`.
    Segment,
    /// PostHog capture batches to `/batch/`, the API key in the body.
    PostHog,
    /// Snowplow `tp2` POSTs of self-describing events, no write key (app id `loadtest`).
    Snowplow,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Native,
        Protocol::Segment,
        Protocol::PostHog,
        Protocol::Snowplow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Segment => "segment",
            Protocol::PostHog => "posthog",
            Protocol::Snowplow => "snowplow",
        }
    }

    /// The collector path its requests go to.
    pub fn path(self) -> &'static str {
        match self {
            Protocol::Native => "/v1/events",
            Protocol::Segment => "/v1/batch",
            Protocol::PostHog => "/batch/",
            Protocol::Snowplow => "/com.snowplowanalytics.snowplow/tp2",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of native, segment, posthog, snowplow"))
    }
}

/// The write key PostHog bodies carry when a request must be refused.
pub const BAD_KEY: &str = "wk_not_a_real_key";

/// The app id of Snowplow traffic.
pub const SNOWPLOW_APP: &str = "loadtest";

/// One event as planned: the reconciliation needs to know what to expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub event_id: String,
    pub valid: bool,
}

/// One request body and what it carries.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Sequence number of the batch as first generated (a retry keeps it).
    pub seq: u64,
    pub body: Bytes,
    pub events: Vec<Planned>,
    /// True when this is a resend of batch `seq`.
    pub retry: bool,
    /// Send with an unknown write key: the whole request must be refused (401).
    pub bad_key: bool,
}

/// The kinds of invalid event, injected in turn.
const INVALID_KINDS: [&str; 4] = [
    "missing_timestamp",
    "wrong_type",
    "unknown_platform",
    "schema_violation",
];

const PLATFORMS: [&str; 3] = ["ios", "android", "web"];
const APP_VERSIONS: [&str; 4] = ["5.12.0", "5.11.2", "5.10.0", "4.9.9"];

/// Writes one Segment track call as analytics.js or a mobile SDK sends it. `invalid`
/// breaks it in one of the ways Segment itself refuses (or a schema violation).
#[allow(clippy::too_many_arguments)]
fn write_segment_message(
    body: &mut String,
    event_id: &str,
    name: &str,
    properties: &str,
    user: u64,
    platform: &str,
    app_version: &str,
    happened: OffsetDateTime,
    invalid: Option<&str>,
) {
    let mut stamp = [0u8; 30];
    let mut timestamp = timefmt::format(happened, &mut stamp).to_owned();
    let title = title_case(name);
    let (mut call, mut event, mut properties) = ("track", title.as_str(), properties.to_owned());
    let mut ids = format!(r#""userId":"user-{user}","anonymousId":"device-{user}","#);
    match invalid {
        None => {}
        Some("missing_timestamp") => timestamp = "yesterday".into(),
        Some("wrong_type") => call = "bogus",
        Some("unknown_platform") => ids.clear(),
        Some(_) => {
            event = "Item View";
            properties = r#"{"position":-1}"#.into();
        }
    }
    let device = match platform {
        "ios" => r#""os":{"name":"iOS"},"library":{"name":"analytics-swift"}"#,
        "android" => r#""os":{"name":"Android"},"library":{"name":"analytics-kotlin"}"#,
        _ => r#""library":{"name":"analytics.js"}"#,
    };
    let _ = write!(
        body,
        r#"{{"type":"{call}","event":"{event}","messageId":"{event_id}",{ids}"timestamp":"{timestamp}","properties":{properties},"context":{{"app":{{"version":"{app_version}"}},{device},"locale":"en-GB"}}}}"#
    );
}

/// "item_view" → "Item View": what Segment and PostHog SDK users write, and what the
/// collector snake-cases back.
fn title_case(name: &str) -> String {
    name.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The members of a JSON object's text (`{"a":1}` → `"a":1`).
fn members(object: &str) -> &str {
    object
        .trim()
        .strip_prefix('{')
        .and_then(|o| o.strip_suffix('}'))
        .unwrap_or_default()
}

/// What one generated event is, whatever protocol writes it.
struct Draft<'a> {
    event_id: &'a str,
    name: &'a str,
    properties: &'a str,
    user: u64,
    session: u64,
    platform: &'a str,
    app_version: &'a str,
    happened: OffsetDateTime,
    sent: OffsetDateTime,
    invalid: Option<&'a str>,
}

/// Writes one event as posthog-js or a PostHog mobile SDK sends it. `invalid` breaks it
/// in one of the ways PostHog itself refuses (or a schema violation).
fn write_posthog_event(body: &mut String, d: &Draft<'_>) {
    let mut stamp = [0u8; 30];
    let mut timestamp = timefmt::format(d.happened, &mut stamp).to_owned();
    let (mut event, mut properties) = (title_case(d.name), d.properties.to_owned());
    let user = d.user;
    let mut distinct = format!(r#""distinct_id":"user-{user}","#);
    match d.invalid {
        None => {}
        Some("missing_timestamp") => timestamp = "yesterday".into(),
        Some("wrong_type") => distinct = format!(r#""distinct_id":{{"id":{user}}},"#),
        Some("unknown_platform") => distinct.clear(),
        Some(_) => {
            event = "Item View".into();
            properties = r#"{"position":-1}"#.into();
        }
    }
    let (lib, os) = match d.platform {
        "ios" => ("posthog-ios", "iOS"),
        "android" => ("posthog-android", "Android"),
        _ => ("web", "Mac OS X"),
    };
    let own = members(&properties);
    let _ = write!(
        body,
        r#"{{"event":"{event}",{distinct}"uuid":"{id}","timestamp":"{timestamp}","properties":{{"$lib":"{lib}","$lib_version":"3.9.0","$os":"{os}","$device_id":"device-{user}","$session_id":"session-{user}-{session}","$app_version":"{version}"{sep}{own}}}}}"#,
        id = d.event_id,
        session = d.session,
        version = d.app_version,
        sep = if own.is_empty() { "" } else { "," },
    );
}

/// Writes one self-describing event as a Snowplow tracker sends it in a `tp2` body.
/// `invalid` breaks it in one of the ways the mapping refuses (or a schema violation).
fn write_snowplow_event(body: &mut String, d: &Draft<'_>) {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000).to_string();
    let (mut kind, mut name, mut properties) = ("ue", d.name, d.properties.to_owned());
    let mut dtm = ms(d.happened);
    let user = d.user;
    let mut ids = format!(r#""uid":"user-{user}","duid":"device-{user}","#);
    match d.invalid {
        None => {}
        Some("missing_timestamp") => dtm = "yesterday".into(),
        Some("wrong_type") => kind = "zz",
        Some("unknown_platform") => ids.clear(),
        Some(_) => {
            name = "item_view";
            properties = r#"{"position":-1}"#.into();
        }
    }
    let event = b64(&format!(
        r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{{"schema":"iglu:com.acme/{name}/jsonschema/1-0-0","data":{properties}}}}}"#
    ));
    let (p, contexts) = match d.platform {
        "ios" | "android" => (
            "mob",
            format!(
                r#","cx":"{}""#,
                b64(&format!(
                    r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0","data":[{{"schema":"iglu:com.snowplowanalytics.snowplow/mobile_context/jsonschema/1-0-2","data":{{"osType":"{}","osVersion":"17","deviceManufacturer":"x","deviceModel":"y"}}}},{{"schema":"iglu:com.snowplowanalytics.mobile/application/jsonschema/1-0-0","data":{{"version":"{}","build":"1"}}}}]}}"#,
                    d.platform, d.app_version
                ))
            ),
        ),
        _ => ("web", String::new()),
    };
    let _ = write!(
        body,
        r#"{{"e":"{kind}","eid":"{id}","aid":"{SNOWPLOW_APP}","p":"{p}","tv":"js-3.0.0","tna":"sp",{ids}"sid":"session-{user}-{session}","dtm":"{dtm}","stm":"{stm}","ue_px":"{event}"{contexts}}}"#,
        id = d.event_id,
        session = d.session,
        stm = ms(d.sent),
    );
}

/// Generates batches for one run.
pub struct Generator {
    rng: StdRng,
    run_id: String,
    scenario: Scenario,
    seq: u64,
    invalid_kind: usize,
    /// Recent batches an SDK might resend.
    recent: VecDeque<Batch>,
    /// The key PostHog bodies carry.
    write_key: String,
}

impl Generator {
    pub fn new(run_id: impl Into<String>, seed: u64, scenario: Scenario) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            run_id: run_id.into(),
            scenario,
            seq: 0,
            invalid_kind: 0,
            recent: VecDeque::with_capacity(64),
            write_key: "dev".into(),
        }
    }

    /// The write key that bodies carry when their protocol puts it there (PostHog).
    pub fn with_write_key(mut self, key: impl Into<String>) -> Generator {
        self.write_key = key.into();
        self
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The next request: a retry of a recent batch, or a new batch sent at `now`.
    pub fn next_batch(&mut self, now: OffsetDateTime) -> Batch {
        if !self.recent.is_empty() && self.rng.random::<f64>() < self.scenario.retry_rate {
            let i = self.rng.random_range(0..self.recent.len());
            let mut batch = self.recent[i].clone();
            batch.retry = true;
            return batch;
        }
        let seq = self.seq;
        self.seq += 1;
        let bad_key = self.rng.random::<f64>() < self.scenario.unknown_key_rate;
        let user = self.zipf_user();
        let device_skew = if self.rng.random::<f64>() < self.scenario.skewed_device_rate {
            let minutes = self.rng.random_range(-180i64..180);
            time::Duration::minutes(minutes)
        } else {
            time::Duration::ZERO
        };
        let device_now = now + device_skew;
        let platform = PLATFORMS[(user % 3) as usize];
        let app_version = APP_VERSIONS[(user % 4) as usize];
        let mut planned = Vec::with_capacity(self.scenario.batch_size);
        // Written as text rather than built as a JSON tree: the generator must not be
        // what limits the request rate. Every value written is plain ASCII.
        let mut body = String::with_capacity(450 * self.scenario.batch_size + 64);
        let mut stamp = [0u8; 30];
        let sent = timefmt::format(device_now, &mut stamp);
        let _ = match self.scenario.protocol {
            Protocol::Native => write!(body, r#"{{"sent_at":"{sent}","events":["#),
            Protocol::Segment => write!(body, r#"{{"sentAt":"{sent}","batch":["#),
            Protocol::PostHog => {
                let key = if bad_key { BAD_KEY } else { &self.write_key };
                write!(body, r#"{{"api_key":"{key}","sent_at":"{sent}","batch":["#)
            }
            Protocol::Snowplow => write!(
                body,
                r#"{{"schema":"{}jsonschema/1-0-4","data":["#,
                tollgate_event::snowplow::PAYLOAD_SCHEMA_PREFIX
            ),
        };
        for i in 0..self.scenario.batch_size {
            // Zero-padded so that even a short run id makes a valid id (8+ characters).
            let event_id = format!("{}-{seq:08}-{i:04}", self.run_id);
            let mut happened =
                device_now - time::Duration::milliseconds(self.rng.random_range(0..5_000));
            if self.rng.random::<f64>() < self.scenario.late_rate {
                happened -= time::Duration::hours(self.rng.random_range(2..72));
            }
            let picked = self.pick_event();
            let mut properties = match picked.as_str() {
                "item_view" => format!(
                    r#"{{"item_id":"item-{}","position":{i}}}"#,
                    self.rng.random_range(0..50_000)
                ),
                "session_start" => format!(r#"{{"cold_start":{}}}"#, i == 0),
                "button_click" => r#"{"button":"share"}"#.to_owned(),
                _ => "{}".to_owned(),
            };
            let mut name: &str = &picked;
            let valid = self.rng.random::<f64>() >= self.scenario.invalid_rate;
            if i > 0 {
                body.push(',');
            }
            if self.scenario.protocol != Protocol::Native {
                let kind = (!valid).then(|| {
                    self.invalid_kind += 1;
                    INVALID_KINDS[(self.invalid_kind - 1) % INVALID_KINDS.len()]
                });
                let draft = Draft {
                    event_id: &event_id,
                    name,
                    properties: &properties,
                    user,
                    session: seq / 50,
                    platform,
                    app_version,
                    happened,
                    sent: device_now,
                    invalid: kind,
                };
                match self.scenario.protocol {
                    Protocol::PostHog => write_posthog_event(&mut body, &draft),
                    Protocol::Snowplow => write_snowplow_event(&mut body, &draft),
                    _ => write_segment_message(
                        &mut body,
                        &event_id,
                        name,
                        &properties,
                        user,
                        platform,
                        app_version,
                        happened,
                        kind,
                    ),
                }
                planned.push(Planned { event_id, valid });
                continue;
            }
            let (mut schema_version, mut platform, mut timestamp) = ("1", platform, true);
            if !valid {
                match INVALID_KINDS[self.invalid_kind % INVALID_KINDS.len()] {
                    "missing_timestamp" => timestamp = false,
                    "wrong_type" => schema_version = r#""one""#,
                    "unknown_platform" => platform = "palm_pilot",
                    _ => {
                        name = "item_view";
                        properties = r#"{"position":-1}"#.to_owned();
                    }
                }
                self.invalid_kind += 1;
            }
            let _ = write!(
                body,
                r#"{{"event_id":"{event_id}","event_name":"{name}","schema_version":{schema_version},"user_id":"user-{user}","device_id":"device-{user}","session_id":"session-{user}-{}","#,
                seq / 50
            );
            if timestamp {
                let _ = write!(
                    body,
                    r#""timestamp_event":"{}","#,
                    timefmt::format(happened, &mut stamp)
                );
            }
            let _ = write!(
                body,
                r#""platform":"{platform}","app_version":"{app_version}","surface":"home_feed","experiment_ids":["ranker_v7"],"consent":{{"analytics":true}},"context":{{"locale":"en-GB"}},"properties":{properties}}}"#
            );
            planned.push(Planned { event_id, valid });
        }
        body.push_str("]}");
        let batch = Batch {
            seq,
            body: Bytes::from(body),
            events: planned,
            retry: false,
            bad_key,
        };
        // A refused request is not one an SDK would resend as is: its ids stay unique.
        if !bad_key {
            if self.recent.len() == self.recent.capacity() {
                self.recent.pop_front();
            }
            self.recent.push_back(batch.clone());
        }
        batch
    }

    /// An event name, drawn by the scenario's weights.
    fn pick_event(&mut self) -> String {
        let total: u64 = self
            .scenario
            .event_mix
            .values()
            .map(|w| u64::from(*w))
            .sum();
        let mut draw = self.rng.random_range(0..total.max(1));
        for (name, weight) in &self.scenario.event_mix {
            if draw < u64::from(*weight) {
                return name.clone();
            }
            draw -= u64::from(*weight);
        }
        "item_view".to_owned()
    }

    /// A user index from a Zipf-like distribution (s ≈ 1): user 0 is the most active.
    fn zipf_user(&mut self) -> u64 {
        let n = self.scenario.users.max(1) as f64;
        let u: f64 = self.rng.random();
        // Inverse of the continuous approximation of Zipf(1): x = n^u.
        (n.powf(u) - 1.0).floor().min(n - 1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let mut a = Generator::new("run", 7, Scenario::default());
        let mut b = Generator::new("run", 7, Scenario::default());
        for _ in 0..50 {
            assert_eq!(a.next_batch(now).body, b.next_batch(now).body);
        }
    }

    #[test]
    fn rates_are_honoured_and_retries_resend_the_same_ids() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let scenario = Scenario {
            retry_rate: 0.2,
            invalid_rate: 0.1,
            ..Scenario::default()
        };
        let mut g = Generator::new("run", 1, scenario);
        let (mut retries, mut invalid, mut events) = (0, 0, 0);
        let mut seen = std::collections::HashMap::new();
        for _ in 0..2000 {
            let batch = g.next_batch(now);
            if batch.retry {
                retries += 1;
                assert_eq!(
                    seen.get(&batch.seq),
                    Some(&batch.body),
                    "a retry resends the batch as is"
                );
            } else {
                seen.insert(batch.seq, batch.body.clone());
                events += batch.events.len();
                invalid += batch.events.iter().filter(|e| !e.valid).count();
            }
        }
        assert!((300..=500).contains(&retries), "{retries}");
        let share = invalid as f64 / events as f64;
        assert!((0.08..0.12).contains(&share), "{share}");
    }

    #[test]
    fn bodies_are_valid_json_with_the_planned_events() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let scenario = Scenario {
            invalid_rate: 0.3,
            ..Scenario::default()
        };
        let mut g = Generator::new("run", 5, scenario);
        for _ in 0..200 {
            let batch = g.next_batch(now);
            let body: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
            let events = body["events"].as_array().unwrap();
            assert_eq!(events.len(), batch.events.len());
            for (event, planned) in events.iter().zip(&batch.events) {
                assert_eq!(event["event_id"], planned.event_id.as_str());
                let parsed = tollgate_event::parse_event(
                    event.clone(),
                    &tollgate_event::Platforms::default(),
                );
                // Schema violations pass the base model; the other invalid kinds do not.
                if planned.valid {
                    assert!(parsed.is_ok(), "{event}");
                }
            }
        }
    }

    #[test]
    fn segment_batches_map_to_the_planned_events() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let scenario = Scenario {
            invalid_rate: 0.3,
            protocol: Protocol::Segment,
            ..Scenario::default()
        };
        let mut g = Generator::new("run", 9, scenario);
        for _ in 0..100 {
            let batch = g.next_batch(now);
            let body: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
            let messages = body["batch"].as_array().unwrap();
            assert_eq!(messages.len(), batch.events.len());
            for (message, planned) in messages.iter().zip(&batch.events) {
                assert_eq!(message["messageId"], planned.event_id.as_str());
                let mapped = tollgate_event::segment::map_message(
                    message.clone(),
                    None,
                    Default::default(),
                    now,
                    &|| "server-id".into(),
                );
                if planned.valid {
                    assert!(mapped.is_ok(), "{message}");
                }
            }
        }
    }

    #[test]
    fn posthog_and_snowplow_batches_map_to_the_planned_events() {
        let now = datetime!(2026-11-29 12:00 UTC);
        for protocol in [Protocol::PostHog, Protocol::Snowplow] {
            let scenario = Scenario {
                invalid_rate: 0.3,
                unknown_key_rate: 0.1,
                protocol,
                ..Scenario::default()
            };
            let mut g = Generator::new("run", 11, scenario).with_write_key("wk_test");
            let (mut valid, mut invalid) = (0, 0);
            for _ in 0..100 {
                let batch = g.next_batch(now);
                let body: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
                let events = match protocol {
                    Protocol::PostHog => {
                        let key = if batch.bad_key { BAD_KEY } else { "wk_test" };
                        assert_eq!(body["api_key"], key);
                        body["batch"].as_array().unwrap().clone()
                    }
                    _ => body["data"].as_array().unwrap().clone(),
                };
                assert_eq!(events.len(), batch.events.len());
                for (event, planned) in events.into_iter().zip(&batch.events) {
                    let mapped = match protocol {
                        Protocol::PostHog => {
                            tollgate_event::posthog::map_event(event, None, now, &|| "s".into())
                        }
                        _ => tollgate_event::snowplow::map_event(event, now, false, &|| "s".into()),
                    };
                    match (planned.valid, mapped) {
                        (true, Ok(m)) => {
                            valid += 1;
                            assert_eq!(m.event.event_id, planned.event_id);
                            assert!(["ios", "android", "web"].contains(&m.event.platform.as_str()));
                        }
                        (true, Err(e)) => panic!("{protocol:?}: {e}"),
                        // A schema violation maps; the schema refuses it.
                        (false, Ok(m)) => assert_eq!(m.event.properties["position"], -1),
                        (false, Err(_)) => invalid += 1,
                    }
                }
            }
            assert!(
                valid > 1000 && invalid > 300,
                "{protocol:?}: {valid} {invalid}"
            );
        }
    }

    #[test]
    fn the_event_mix_follows_its_weights_and_the_shipped_scenario_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/loadtest-scenario.toml");
        let shipped = Scenario::load(&path).unwrap();
        assert_eq!(
            shipped,
            Scenario::default(),
            "the shipped file documents the defaults"
        );
        let mut scenario = Scenario {
            invalid_rate: 0.0,
            retry_rate: 0.0,
            ..Scenario::default()
        };
        scenario.event_mix = [("checkout".to_owned(), 1), ("item_view".to_owned(), 3)]
            .into_iter()
            .collect();
        let mut g = Generator::new("run", 2, scenario);
        let (mut checkout, mut total) = (0, 0);
        for _ in 0..200 {
            let body: serde_json::Value =
                serde_json::from_slice(&g.next_batch(datetime!(2026-11-29 12:00 UTC)).body)
                    .unwrap();
            for event in body["events"].as_array().unwrap() {
                total += 1;
                if event["event_name"] == "checkout" {
                    checkout += 1;
                    assert_eq!(event["properties"], serde_json::json!({}));
                }
            }
        }
        let share = checkout as f64 / total as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("s.toml");
        std::fs::write(&bad, "retry_rat = 0.5\n").unwrap();
        assert!(Scenario::load(&bad).unwrap_err().contains("retry_rat"));
    }

    #[test]
    fn user_activity_is_skewed() {
        let mut g = Generator::new("run", 3, Scenario::default());
        let picks: Vec<u64> = (0..10_000).map(|_| g.zipf_user()).collect();
        let top = picks.iter().filter(|u| **u < 100).count();
        // 1% of users send far more than 1% of the traffic.
        assert!(top > 4_000, "{top}");
        assert!(picks.iter().all(|u| *u < 10_000));
    }
}
