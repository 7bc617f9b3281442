//! Candidate schemas: the next version of an event's schema, validated against live
//! traffic beside the live versions before it is promoted, deciding nothing.
//!
//! `<event>/v<N>.candidate.json` is loaded with the folder. Every event of that name
//! whose properties reach validation is also checked against the candidate, and the
//! two verdicts are counted: accepted live and by the candidate, accepted live but
//! rejected by the candidate (*would reject*: what promoting it would cost), rejected
//! live but accepted by the candidate (*would accept*: what it would recover, e.g. from
//! the quarantine). Each would-reject event is also counted per field (the JSON pointer
//! of the offending value, array indices as `*`) and keyword (`type`, `minimum`,
//! `required`, …). Never a value: counts and paths only, as the live answers.
//!
//! Tollgate never coerces a value to fit a schema, so there is no "would coerce": a
//! value the candidate types differently is a would-reject at that field.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// Distinct (field, keyword) pairs counted per candidate; further ones are counted
/// under the field `(other)`, so a schema with open-ended keys cannot grow the table.
const MAX_FIELDS: usize = 200;

/// A candidate schema with its counts.
pub struct Candidate {
    pub event: String,
    pub version: u32,
    pub path: PathBuf,
    /// Digest of the schema: a reload keeps the counts of an unchanged candidate.
    digest: String,
    validator: jsonschema::Validator,
    stats: Arc<Stats>,
}

/// What a candidate saw since it was first loaded.
struct Stats {
    since: OffsetDateTime,
    both_accept: AtomicU64,
    would_reject: AtomicU64,
    both_reject: AtomicU64,
    would_accept: AtomicU64,
    /// Would-reject events by (field, keyword).
    errors: Mutex<HashMap<(String, String), u64>>,
}

/// The two verdicts on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdicts {
    BothAccept,
    WouldReject,
    BothReject,
    WouldAccept,
}

impl Verdicts {
    pub fn label(self) -> &'static str {
        match self {
            Verdicts::BothAccept => "both_accept",
            Verdicts::WouldReject => "would_reject",
            Verdicts::BothReject => "both_reject",
            Verdicts::WouldAccept => "would_accept",
        }
    }
}

/// One candidate's counts, as `/schemas/candidates` shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CandidateReport {
    pub event: String,
    pub version: u32,
    pub file: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Events checked against the candidate.
    pub checked: u64,
    pub both_accept: u64,
    pub would_reject: u64,
    pub both_reject: u64,
    pub would_accept: u64,
    /// Share of the events accepted live that the candidate would reject.
    pub would_reject_share: f64,
    /// Worst first.
    pub errors: Vec<FieldErrors>,
}

/// Would-reject events at one field for one keyword.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldErrors {
    pub field: String,
    pub keyword: String,
    pub events: u64,
}

impl Candidate {
    pub(super) fn new(
        event: String,
        version: u32,
        path: PathBuf,
        schema: &Value,
        validator: jsonschema::Validator,
    ) -> Candidate {
        use sha2::Digest;
        let digest = crate::privacy::hex(&sha2::Sha256::digest(schema.to_string()));
        Candidate {
            event,
            version,
            path,
            digest,
            validator,
            stats: Arc::new(Stats {
                since: OffsetDateTime::now_utc(),
                both_accept: AtomicU64::new(0),
                would_reject: AtomicU64::new(0),
                both_reject: AtomicU64::new(0),
                would_accept: AtomicU64::new(0),
                errors: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Takes over `previous`'s counts when it is the same schema.
    pub(super) fn keep_counts_of(&mut self, previous: &Candidate) {
        if previous.version == self.version && previous.digest == self.digest {
            self.stats = previous.stats.clone();
        }
    }

    /// Checks `properties` against the candidate, given the live verdict, and counts
    /// both verdicts.
    pub fn observe(&self, properties: &Value, live_accepted: bool) -> Verdicts {
        let stats = &self.stats;
        let accepted = self.validator.is_valid(properties);
        let verdicts = match (live_accepted, accepted) {
            (true, true) => Verdicts::BothAccept,
            (true, false) => Verdicts::WouldReject,
            (false, false) => Verdicts::BothReject,
            (false, true) => Verdicts::WouldAccept,
        };
        let counter = match verdicts {
            Verdicts::BothAccept => &stats.both_accept,
            Verdicts::WouldReject => &stats.would_reject,
            Verdicts::BothReject => &stats.both_reject,
            Verdicts::WouldAccept => &stats.would_accept,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdicts
    }

    /// The (field, keyword) pairs `properties` fails the candidate at, each once.
    pub fn errors(&self, properties: &Value) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = self
            .validator
            .iter_errors(properties)
            .map(|e| {
                let keyword = e
                    .schema_path()
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let mut field = format!("/properties{}", field_path(e.instance_path().as_str()));
                // A missing property: the field is the property the schema requires
                // (the schema's name, never the client's).
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                    && let Some(name) = property.as_str()
                {
                    field.push('/');
                    field.push_str(name);
                }
                (field, keyword)
            })
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// Counts one would-reject event's (field, keyword) pairs; a pair past the
    /// table's bound is counted, and renamed, as field `(other)` (so that metric labels
    /// stay bounded too).
    pub fn count_errors(&self, errors: &mut [(String, String)]) {
        let mut table = self.stats.errors.lock().unwrap_or_else(|e| e.into_inner());
        for pair in errors {
            if table.len() >= MAX_FIELDS && !table.contains_key(pair) {
                pair.0 = "(other)".to_owned();
            }
            *table.entry(pair.clone()).or_default() += 1;
        }
    }

    /// The four verdict counts so far.
    pub fn counts(&self) -> [(Verdicts, u64); 4] {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (Verdicts::BothAccept, load(&s.both_accept)),
            (Verdicts::WouldReject, load(&s.would_reject)),
            (Verdicts::BothReject, load(&s.both_reject)),
            (Verdicts::WouldAccept, load(&s.would_accept)),
        ]
    }

    pub fn report(&self) -> CandidateReport {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (both_accept, would_reject) = (load(&s.both_accept), load(&s.would_reject));
        let (both_reject, would_accept) = (load(&s.both_reject), load(&s.would_accept));
        let mut errors: Vec<FieldErrors> = s
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((field, keyword), events)| FieldErrors {
                field: field.clone(),
                keyword: keyword.clone(),
                events: *events,
            })
            .collect();
        errors.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then_with(|| (&a.field, &a.keyword).cmp(&(&b.field, &b.keyword)))
        });
        let live_accepted = both_accept + would_reject;
        CandidateReport {
            event: self.event.clone(),
            version: self.version,
            file: self.path.display().to_string(),
            since: s.since,
            checked: live_accepted + both_reject + would_accept,
            both_accept,
            would_reject,
            both_reject,
            would_accept,
            would_reject_share: if live_accepted == 0 {
                0.0
            } else {
                would_reject as f64 / live_accepted as f64
            },
            errors,
        }
    }
}

/// An instance path with array indices as `*`, so that one field is one row.
fn field_path(pointer: &str) -> String {
    pointer
        .split('/')
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn candidate(schema: Value) -> Candidate {
        let validator = jsonschema::validator_for(&schema).unwrap();
        Candidate::new(
            "order".into(),
            2,
            "v2.candidate.json".into(),
            &schema,
            validator,
        )
    }

    #[test]
    fn fields_are_pointers_with_indices_folded_and_missing_properties_named() {
        let c = candidate(json!({
            "type": "object",
            "required": ["price"],
            "properties": {
                "price": {"type": "number", "minimum": 0},
                "items": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer"}}}}
            }
        }));
        assert_eq!(
            c.errors(&json!({"items": [{"qty": 1}, {"qty": "2"}, {"qty": "x"}]})),
            [
                ("/properties/items/*/qty".to_owned(), "type".to_owned()),
                ("/properties/price".to_owned(), "required".to_owned()),
            ]
        );
        assert_eq!(
            c.errors(&json!({"price": -1})),
            [("/properties/price".to_owned(), "minimum".to_owned())]
        );
    }

    #[test]
    fn verdicts_are_counted_and_the_share_is_of_live_accepted_events() {
        let c = candidate(json!({"type": "object", "properties": {"price": {"minimum": 0}}}));
        for (price, live) in [(1, true), (2, true), (-1, true), (-2, false), (3, false)] {
            let props = json!({"price": price});
            if c.observe(&props, live) == Verdicts::WouldReject {
                c.count_errors(&mut c.errors(&props));
            }
        }
        let r = c.report();
        assert_eq!(
            (
                r.checked,
                r.both_accept,
                r.would_reject,
                r.both_reject,
                r.would_accept
            ),
            (5, 2, 1, 1, 1)
        );
        assert!((r.would_reject_share - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            r.errors,
            [FieldErrors {
                field: "/properties/price".into(),
                keyword: "minimum".into(),
                events: 1
            }]
        );
    }

    #[test]
    fn the_field_table_is_bounded() {
        let c = candidate(json!({"type": "object", "additionalProperties": {"type": "string"}}));
        for n in 0..(MAX_FIELDS + 50) {
            let props = json!({ format!("k{n}"): 1 });
            let mut errors = c.errors(&props);
            c.count_errors(&mut errors);
            assert_eq!(errors[0].0 == "(other)", n >= MAX_FIELDS);
        }
        let r = c.report();
        assert_eq!(r.errors.len(), MAX_FIELDS + 1);
        assert_eq!(r.errors[0].field, "(other)");
        assert_eq!(r.errors[0].events, 50);
    }
}
