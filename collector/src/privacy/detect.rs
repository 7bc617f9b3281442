//! PII in free text: email addresses, phone numbers and payment card numbers inside
//! string property values, found and redacted (or pseudonymized) before writing.
//!
//! Patterns are deliberately conservative so that ordinary ids survive: a phone number
//! needs a leading `+` or a separator (space, dash, dot, parenthesis) between its 7–15
//! digits, and a card number must pass the Luhn check. In identifiers, which are
//! generated far more often than typed, a number must look like one a person writes:
//! a leading `+`, or groups of 2 to 4 digits (`415-555-0132`, `20 7946 0958`), and no
//! card is looked for.

use std::sync::LazyLock;

use regex::Regex;

/// Which detector matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    Email,
    Phone,
    Card,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Card => "card",
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("valid pattern")
});

/// Runs of digits with optional separators; classified afterwards.
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().-]{5,}\d").expect("valid pattern"));

/// Which detectors to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Emails, phone numbers and card numbers: free text.
    All,
    /// Emails and phone numbers only: identifiers, where a long number passing the Luhn
    /// check is far more likely a numeric id than a card, and digit groups of other
    /// shapes (`run4242-17-1-3-4`, `1732900000-000123`) are a generated id's parts.
    Identifier,
}

/// Replaces every piece of PII in `text` with what `replace` returns for it, and calls
/// `found` once per match. Returns `None` when nothing matched (the common case, which
/// then allocates nothing).
///
/// Linear in the length of `text`: both patterns scan it once, and their matches
/// (each in order) are merged in one walk.
pub fn scrub(
    text: &str,
    scope: Scope,
    replace: &mut dyn FnMut(Detector, &str) -> String,
    found: &mut dyn FnMut(Detector),
) -> Option<String> {
    let spans = find(text, scope);
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, detector) in spans {
        out.push_str(&text[last..start]);
        out.push_str(&replace(detector, &text[start..end]));
        found(detector);
        last = end;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// True when `text` holds PII of `scope`.
pub fn contains_pii(text: &str, scope: Scope) -> bool {
    !find(text, scope).is_empty()
}

/// The non-overlapping PII spans of `text`, in order.
fn find(text: &str, scope: Scope) -> Vec<(usize, usize, Detector)> {
    // Cheap pre-checks: most values have neither '@' nor a run of digits.
    let has_at = text.contains('@');
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if !has_at && digits < 7 {
        return Vec::new();
    }
    let emails: Vec<(usize, usize)> = if has_at {
        EMAIL
            .find_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect()
    } else {
        Vec::new()
    };
    let mut spans: Vec<(usize, usize, Detector)> = Vec::with_capacity(emails.len());
    let mut next_email = 0;
    if digits >= 7 {
        for m in NUMBER.find_iter(text) {
            // Emails that end before this number cannot overlap it or any later one.
            while next_email < emails.len() && emails[next_email].1 <= m.start() {
                let (s, e) = emails[next_email];
                spans.push((s, e, Detector::Email));
                next_email += 1;
            }
            let overlaps = emails.get(next_email).is_some_and(|(s, _)| *s < m.end());
            if overlaps {
                continue;
            }
            if let Some(detector) = classify(m.as_str(), scope) {
                spans.push((m.start(), m.end(), detector));
            }
        }
    }
    spans.extend(
        emails[next_email..]
            .iter()
            .map(|(s, e)| (*s, *e, Detector::Email)),
    );
    spans
}

/// Dates (2026-11-29) and dotted quads (10.0.0.1, 10.15.7.123) look like phone numbers
/// to the pattern but are not.
static NOT_A_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\d{4}-\d{2}-\d{2}|\d{1,3}(?:\.\d{1,3}){2,3})$").expect("valid pattern")
});

fn classify(candidate: &str, scope: Scope) -> Option<Detector> {
    let digits: Vec<u8> = candidate
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let separator = |b: u8| matches!(b, b' ' | b'-' | b'.' | b'(' | b')');
    let separated = candidate.bytes().any(separator);
    if scope == Scope::All && (13..=19).contains(&digits.len()) && luhn(&digits) {
        return Some(Detector::Card);
    }
    let international = candidate.starts_with('+');
    let written = match scope {
        Scope::All => international || separated,
        // Groups a person writes: at least two, each of 2 to 4 digits.
        Scope::Identifier => {
            let mut groups = candidate
                .split(|c: char| c.is_ascii() && separator(c as u8))
                .filter(|g| !g.is_empty());
            international
                || (separated
                    && groups.clone().count() >= 2
                    && groups.all(|g| (2..=4).contains(&g.len())))
        }
    };
    if (7..=15).contains(&digits.len()) && written && !NOT_A_PHONE.is_match(candidate.trim()) {
        return Some(Detector::Phone);
    }
    None
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> Option<String> {
        scrub(
            text,
            Scope::All,
            &mut |d, _| format!("[{}]", d.as_str()),
            &mut |_| {},
        )
    }

    #[test]
    fn finds_what_it_should() {
        assert_eq!(
            redact("mail me at ada.l@example.co.uk!").as_deref(),
            Some("mail me at [email]!")
        );
        assert_eq!(
            redact("call +49 30 1234567 now").as_deref(),
            Some("call [phone] now")
        );
        assert_eq!(redact("(415) 555-0132").as_deref(), Some("[phone]"));
        assert_eq!(
            redact("card 4111 1111 1111 1111 ok").as_deref(),
            Some("card [card] ok")
        );
        assert_eq!(redact("4111-1111-1111-1111").as_deref(), Some("[card]"));
        assert_eq!(
            redact("a@b.io or +33 6 12 34 56 78").as_deref(),
            Some("[email] or [phone]")
        );
    }

    #[test]
    fn leaves_ordinary_values_alone() {
        for text in [
            "item-12345678",
            "order 123456789",
            "4111111111111112",
            "2026-11-29",
            "2026-11-29T10:00:00Z",
            "10.15.7.123",
            "v5.12.0",
            "no digits here",
            "user@localhost",
            "",
        ] {
            assert_eq!(redact(text), None, "{text}");
        }
    }

    #[test]
    fn luhn_check() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
    }

    #[test]
    fn numbers_overlapping_an_email_are_part_of_it() {
        assert_eq!(
            redact("+44 20 7946 0958 jo.55512345@example.com then 555-123-4567").as_deref(),
            Some("[phone] [email] then [phone]")
        );
        assert_eq!(
            redact("a@b.io 555-123-4567 c@d.io").as_deref(),
            Some("[email] [phone] [email]")
        );
    }

    #[test]
    fn identifiers_keep_luhn_numbers() {
        let id = "4111111111111111";
        assert_eq!(
            scrub(id, Scope::Identifier, &mut |_, _| "x".into(), &mut |_| {}),
            None
        );
        assert!(contains_pii(id, Scope::All));
        assert!(!contains_pii(id, Scope::Identifier));
        assert!(contains_pii("jane@example.com", Scope::Identifier));
        assert!(!contains_pii(
            "0b7e5f3c-6c1d-4b8e-9a52-1f7c2d3e4a5b",
            Scope::All
        ));
        for id in ["run4242-17-1-3-4", "1732900000-000123", "2026-11-30-000017"] {
            assert!(!contains_pii(id, Scope::Identifier), "{id}");
        }
        for phone in [
            "+44 20 7946 0958",
            "415-555-0132",
            "(415) 555-0132",
            "+14155550132",
        ] {
            assert!(contains_pii(phone, Scope::Identifier), "{phone}");
        }
    }

    #[test]
    fn many_matches_in_one_string() {
        // Thousands of emails and numbers in one value: every one found, in one pass
        // (the old overlap check compared each number with every email).
        let text = "x@example.com +1 555 0100 ".repeat(5_000);
        let clean = redact(&text).unwrap();
        assert_eq!(clean.matches("[email]").count(), 5_000);
        assert_eq!(clean.matches("[phone]").count(), 5_000);
    }
}
