//! One event on its way through the pipeline: what each stage knows about it.

use std::sync::Arc;

use time::OffsetDateTime;
use tollgate_event::{Dedupe, Event, EventError, Timing};

use super::Raw;
use crate::privacy::Policy;

/// An event between stages. Admission makes it `Valid`, `Rejected` or `Dropped`; a
/// repeat inside the request becomes `Duplicate`; the writer logs `Valid` and
/// `Rejected` ones; the answer has one result per slot, in request order, and the
/// claim corrects the answer for `Valid` events whose claim did not hold.
// The large variant is the common one (a valid event); boxing it would cost an
// allocation per event on the hot path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Slot {
    Valid {
        event: Event,
        sent_at: Option<OffsetDateTime>,
        timing: Timing,
        dedupe: Dedupe,
        /// Index into the request's claim keys, when the event was claimed.
        claim: Option<usize>,
        /// Its `event_id` came from the client, so a retry can be recognised.
        check: bool,
        /// The privacy policy applied, and the pseudonyms made with previous keys.
        policy: Option<Arc<Policy>>,
        previous: Option<serde_json::Map<String, serde_json::Value>>,
    },
    Rejected {
        error: EventError,
        raw: Raw,
        /// The policy `raw` passed before the quarantine (none for bytes it could not
        /// see into).
        policy: Option<Arc<Policy>>,
    },
    /// Removed by the privacy policy: answered, counted, never written.
    Dropped { event_id: String, error: EventError },
    /// A repeat of an earlier event of the same request.
    Duplicate(String),
}
