//! JSON writing for the log's hot path: the bytes `serde_json::to_writer` writes
//! (compact, the same escapes), without its generic serializer, and with strings
//! scanned eight bytes at a time (record strings rarely need an escape, so most are
//! copied whole).

use serde_json::{Map, Value};

/// Appends `s` as a JSON string.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    match next_escape(bytes, 0) {
        None => {
            out.reserve(bytes.len() + 2);
            out.push(b'"');
            out.extend_from_slice(bytes);
            out.push(b'"');
        }
        Some(at) => write_escaped(out, bytes, at),
    }
}

/// A string with a byte to escape at `at`: runs between escapes are copied whole.
#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8], mut at: usize) {
    out.reserve(bytes.len() + 8);
    out.push(b'"');
    let mut start = 0;
    loop {
        out.extend_from_slice(&bytes[start..at]);
        write_escape(out, bytes[at]);
        start = at + 1;
        match next_escape(bytes, start) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The index of the first byte at or after `from` that JSON requires escaped: `"`,
/// `\` or a control character below 0x20.
///
/// Eight bytes at a time; a string's last bytes are read as the eight that end it
/// (overlapping bytes already found clean), so only strings shorter than eight bytes
/// are looked at byte by byte.
#[inline]
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = &bytes[from..];
    if rest.len() < 8 {
        return rest.iter().position(|b| needs_escape(*b)).map(|i| from + i);
    }
    let (words, tail) = rest.as_chunks::<8>();
    for (k, word) in words.iter().enumerate() {
        if let Some(i) = first_special(word) {
            return Some(from + 8 * k + i);
        }
    }
    if tail.is_empty() {
        return None;
    }
    let last = rest.last_chunk::<8>()?;
    first_special(last).map(|i| from + rest.len() - 8 + i)
}

/// The index of the first byte of `word` that needs an escape.
#[inline]
fn first_special(word: &[u8; 8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of a byte of `below(word, n)` is set when that byte is below `n`
    // (n ≤ 0x80): the borrow of the subtraction reaches a byte's high bit only through
    // a byte below `n`, and bytes that already had it (≥ 0x80) are masked out. A borrow
    // runs on into later bytes, so only the first flagged byte is certain: the first in
    // memory is the least significant of a little-endian word.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let word = u64::from_le_bytes(*word);
    let special = below(word, 0x20)
        | below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1);
    (special != 0).then(|| special.trailing_zeros() as usize / 8)
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Appends a JSON value.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                write_int(out, n);
            } else if let Some(n) = n.as_i64() {
                write_int(out, n);
            } else {
                serde_json::to_writer(&mut *out, n).expect("numbers serialize");
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items, write_value),
        Value::Object(map) => write_map(out, map),
    }
}

/// Appends a JSON array of `items`, each written by `write`.
pub fn write_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// Appends a JSON object, in the map's order.
pub fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut object = Object::open(out);
    for (key, value) in map {
        write_value(object.any_key(key), value);
    }
    object.close();
}

/// Appends an integer.
pub fn write_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An object being written: `key` writes the separator and the key, the caller the
/// value.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Writes `,"key":` (no comma before the first) and hands back the buffer for the
    /// value. `key` is a field name of ours, which never needs an escape.
    pub fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(next_escape(key.as_bytes(), 0).is_none());
        self.separate();
        self.out.reserve(key.len() + 3);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// [`Object::key`] for a key from the data (escaped as needed).
    pub fn any_key(&mut self, key: &str) -> &mut Vec<u8> {
        self.separate();
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    fn separate(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    /// A string field, or `null`.
    pub fn str(&mut self, key: &'static str, value: Option<&str>) {
        let out = self.key(key);
        match value {
            Some(s) => write_str(out, s),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// An integer field, or `null`.
    pub fn int(&mut self, key: &'static str, value: Option<impl itoa::Integer>) {
        let out = self.key(key);
        match value {
            Some(n) => write_int(out, n),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// A timestamp field as the log writes them ([`crate::timefmt`]), or `null`.
    pub fn time(&mut self, key: &'static str, value: Option<time::OffsetDateTime>) {
        let mut buf = [0; 30];
        self.time_text(key, value.map(|t| crate::timefmt::format(t, &mut buf)));
    }

    /// A time already formatted by [`crate::timefmt`] (digits and separators only, so
    /// nothing to escape).
    pub fn time_text(&mut self, key: &'static str, text: Option<&str>) {
        let out = self.key(key);
        match text {
            Some(text) => {
                debug_assert!(next_escape(text.as_bytes(), 0).is_none());
                out.reserve(text.len() + 2);
                out.push(b'"');
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\"\\\\\\x00-\\x1f\\x7fa-zé😀]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(value in value()) {
            let mut ours = Vec::new();
            write_value(&mut ours, &value);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }

        #[test]
        fn strings_with_escapes_anywhere(s in "[\"\\\\\\x00-\\x1f\\x7fa-zé]{0,70}") {
            let mut ours = b"x".to_vec();
            write_str(&mut ours, &s);
            let expected = serde_json::to_vec(&s).unwrap();
            prop_assert_eq!(&ours[1..], expected.as_slice());
        }
    }

    #[test]
    fn every_byte_that_needs_an_escape_is_found_at_every_position_of_every_length() {
        for byte in 0u8..0x80 {
            for len in 1..=26 {
                for at in 0..len {
                    let mut s = "a".repeat(len);
                    s.replace_range(at..=at, std::str::from_utf8(&[byte]).unwrap());
                    assert_written_as_serde_writes(&s, format_args!("{byte:#x} at {at} of {len}"));
                }
            }
        }
    }

    #[test]
    fn a_later_escape_is_found_after_an_earlier_one_in_the_same_word() {
        // Every pair of positions, in one word or two, whole or the last (overlapping)
        // one: each escaped, none twice.
        for len in 8..=26 {
            for first in 0..len {
                for second in first + 1..len {
                    let mut s = "a".repeat(len).into_bytes();
                    s[first] = b'"';
                    s[second] = b'\\';
                    let s = String::from_utf8(s).unwrap();
                    assert_written_as_serde_writes(&s, format_args!("{first}, {second} of {len}"));
                }
            }
        }
    }

    fn assert_written_as_serde_writes(s: &str, case: std::fmt::Arguments<'_>) {
        let mut ours = Vec::new();
        write_str(&mut ours, s);
        assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{case}");
    }
}
