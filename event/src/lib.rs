//! Tollgate's event model, shared by the collector, the shadow proxy and the load tester.
//!
//! # Layout
//! - [`event`]: the native event and its strict parser (`Value` in, [`Event`] or
//!   [`EventError`] out, with a JSON pointer to the offending field).
//! - [`segment`], [`posthog`], [`snowplow`]: map the messages of those SDK families onto
//!   [`Event`] ([`mapped::Mapped`]), one function per protocol, shared by the collector
//!   and the shadow proxy.
//! - [`record`]: what the collector writes to its log ([`Record`]) and its quarantine
//!   ([`QuarantineRecord`]), plus the server-side timing fields ([`Timing`]).
//! - [`json`]: the JSON writer of the log's hot path (the bytes serde_json writes).
//! - [`wire`]: the HTTP contract: header names, per-event statuses, the answer body and
//!   the `X-Tollgate-Outcomes` header, written by the collector and read by the tools.
//!
//! Nothing here does I/O: it is parsing and shaping only, so every binary (and the
//! benchmarks) can use the very same code the collector runs.

pub mod error;
pub mod event;
pub mod json;
pub mod mapped;
pub mod posthog;
pub mod record;
pub mod segment;
pub mod snowplow;
pub mod timefmt;
pub mod wire;

pub use error::{ErrorCode, EventError, json_error_message};
pub use event::{
    Event, Platforms, TypedEvent, parse_event, parse_event_fast, parse_event_str, parse_event_text,
};
pub use record::{Api, Arrival, Dedupe, OutOfRange, QuarantineRecord, Record, SharedTimes, Timing};
