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

/// Runs of digits with optional separators; classified afterwards. ASCII text, by far
/// the common case, is scanned by [`ascii_numbers`], which finds the same spans.
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().-]{5,}\d").expect("valid pattern"));

/// Calls `each` with the spans of `text` that [`NUMBER`] matches, in order.
fn each_number(text: &str, mut each: impl FnMut(usize, usize)) {
    if text.is_ascii() {
        ascii_numbers(text.as_bytes()).for_each(|(start, end)| each(start, end));
    } else {
        // `\s` also takes Unicode spaces (U+00A0, U+2009, ...): leave those to the pattern.
        NUMBER
            .find_iter(text)
            .for_each(|m| each(m.start(), m.end()));
    }
}

/// What [`NUMBER`] finds in ASCII text, without the regex engine: at the leftmost
/// position where `+`? `(`? and a digit start, the run of digits, whitespace and
/// `().-` that follows, up to its last digit, when that makes at least 7 bytes from
/// the first digit. A run too short to match from its first digit is too short from any
/// later one, so the scan skips it whole: one pass.
fn ascii_numbers(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    // `\s` in ASCII: tab, line feed, vertical tab, form feed, carriage return, space.
    let in_run =
        |b: u8| b.is_ascii_digit() || matches!(b, b'\t'..=b'\r' | b' ' | b'(' | b')' | b'.' | b'-');
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let start = at;
            let mut first = start;
            if bytes[first] == b'+' {
                first += 1;
            }
            if bytes.get(first) == Some(&b'(') {
                first += 1;
            }
            if !bytes.get(first).is_some_and(u8::is_ascii_digit) {
                at = start + 1;
                continue;
            }
            let run_end = bytes[first..]
                .iter()
                .position(|b| !in_run(*b))
                .map_or(bytes.len(), |n| first + n);
            let last_digit = bytes[first + 1..run_end]
                .iter()
                .rposition(u8::is_ascii_digit)
                .map(|n| first + 1 + n);
            match last_digit {
                Some(last) if last >= first + 6 => {
                    at = last + 1;
                    return Some((start, last + 1));
                }
                _ => at = run_end,
            }
        }
        None
    })
}

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
        each_number(text, |start, end| {
            // Emails that end before this number cannot overlap it or any later one.
            while next_email < emails.len() && emails[next_email].1 <= start {
                let (s, e) = emails[next_email];
                spans.push((s, e, Detector::Email));
                next_email += 1;
            }
            let overlaps = emails.get(next_email).is_some_and(|(s, _)| *s < end);
            if !overlaps && let Some(detector) = classify(&text[start..end], scope) {
                spans.push((start, end, detector));
            }
        });
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
    let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
    let separator = |b: u8| matches!(b, b' ' | b'-' | b'.' | b'(' | b')');
    let separated = candidate.bytes().any(separator);
    if scope == Scope::All && (13..=19).contains(&digits) && luhn(candidate) {
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
    if (7..=15).contains(&digits) && written && !NOT_A_PHONE.is_match(candidate.trim()) {
        return Some(Detector::Phone);
    }
    None
}

/// The Luhn check over the ASCII digits of `text` (anything else is skipped).
fn luhn(text: &str) -> bool {
    let sum: u32 = text
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
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
        assert!(luhn("4111111111111111"));
        assert!(luhn("4111 1111-1111 1111"));
        assert!(!luhn("4111111111111112"));
        assert!(luhn("79927398713"));
        assert!(!luhn("79927398710"));
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

    proptest::proptest! {
        /// The hand-written scan finds exactly the pattern's spans in ASCII text.
        #[test]
        fn the_ascii_scan_finds_what_the_pattern_finds(
            text in "[0-9 +().\\-a\t\x0b\r\n@]{0,40}"
        ) {
            let scanned: Vec<(usize, usize)> = ascii_numbers(text.as_bytes()).collect();
            let matched: Vec<(usize, usize)> =
                NUMBER.find_iter(&text).map(|m| (m.start(), m.end())).collect();
            proptest::prop_assert_eq!(scanned, matched);
        }
    }

    #[test]
    fn unicode_spaces_still_separate_digits() {
        // U+00A0 (no-break space) and U+2009 (thin space) are `\s` to the pattern.
        assert_eq!(
            redact("call +44\u{a0}20\u{2009}7946\u{a0}0958").as_deref(),
            Some("call [phone]")
        );
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
