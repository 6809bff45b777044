/*!
Entity tags: a record's version as a client sees it, for conditional
requests (`If-None-Match`, `If-Match`) and in `updated` messages.

A tag is derived from the JSON the client is answered with, so no model
has to carry a version column and the answer stays byte for byte what it
was: the first 16 bytes of its SHA-256, base64url, quoted
(`"q9yVdQ5pZ0m1bq3dC7m1bg"`). A findOne answer's tag therefore changes
when anything it shows changes, the records it populates included, and
two answers with different `select`, `omit` or `populate` have different
tags. A write's `If-Match` is compared with the tag of the record as a
findOne without those parameters answers it: the record populated by
default, as the same client may read it.

SHA-256 rather than a faster non-cryptographic hash: a tag is a strong
validator, and a client must not be able to build a different record with
the same tag. Hashing a findOne answer of a few hundred bytes takes about a
microsecond (measured next to the request's own work, it does not show).
*/

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::record::Record;

/// The strong entity tag of a JSON answer, quoted as the `ETag` header
/// carries it.
pub fn of_json(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(24);
    tag.push('"');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&digest[..16], &mut tag);
    tag.push('"');
    tag
}

/// The entity tag of `record` as a client is answered with it.
pub fn of_record(record: &Record) -> String {
    of_json(&record_json(record))
}

/// `record` as the JSON text of an answer.
pub fn record_json(record: &Record) -> Vec<u8> {
    // Infallible: every key is a string and every value a `serde_json::Value`.
    serde_json::to_vec(record).unwrap_or_default()
}

/// What a write requires of the record's current version: its `If-Match`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`: the write goes ahead.
    #[default]
    None,
    /// `If-Match: *`: the record must exist (as it must for any write).
    Exists,
    /// `If-Match: "a", "b"`: the record's current tag must be one of these
    /// (strong comparison: a weak tag `W/"a"` never matches).
    OneOf(Vec<String>),
}

impl Precondition {
    /// Parses the values of `If-Match` headers; `None` when there are none.
    /// A value that is not a list of entity tags matches nothing, so the
    /// write is refused rather than done unconditionally.
    pub fn from_if_match<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tags = Vec::new();
        let mut any = false;
        for value in values {
            any = true;
            if value.trim() == "*" {
                return Precondition::Exists;
            }
            tags.extend(
                list(value)
                    .filter(|t| !t.starts_with("W/"))
                    .map(str::to_owned),
            );
        }
        if any {
            Precondition::OneOf(tags)
        } else {
            Precondition::None
        }
    }

    /// Whether the write is conditional.
    pub fn is_some(&self) -> bool {
        !matches!(self, Precondition::None)
    }

    /// Whether a record whose current tag is `current()` meets it (`current`
    /// runs only for a list of tags).
    pub fn holds(&self, current: impl FnOnce() -> String) -> bool {
        match self {
            Precondition::None | Precondition::Exists => true,
            Precondition::OneOf(tags) => {
                let current = current();
                tags.contains(&current)
            }
        }
    }
}

/// Whether an `If-None-Match` header value names `tag` (weak comparison:
/// `W/"a"` matches `"a"`), or is `*`.
pub fn none_match_names(header: &str, tag: &str) -> bool {
    header.trim() == "*" || list(header).any(|t| t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// The entity tags of a header value: quoted strings separated by commas.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t);
        t.len() >= 2 && t.starts_with('"') && t.ends_with('"')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tag_is_quoted_base64url_of_sixteen_bytes_and_follows_every_byte() {
        let a = of_json(br#"{"id":1,"name":"rex"}"#);
        assert_eq!(a.len(), 24);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert!(
            a[1..23]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, of_json(br#"{"id":1,"name":"rey"}"#));
        assert_eq!(a, of_json(br#"{"id":1,"name":"rex"}"#));
    }

    #[test]
    fn a_records_tag_is_the_tag_of_its_answer() {
        let r = json!({"id": 1, "name": "rex", "owner": {"id": 2}});
        let serde_json::Value::Object(record) = r else {
            unreachable!()
        };
        assert_eq!(
            of_record(&record),
            of_json(br#"{"id":1,"name":"rex","owner":{"id":2}}"#)
        );
    }

    #[test]
    fn if_match_compares_strongly() {
        let tag = || "\"abc\"".to_owned();
        assert_eq!(Precondition::from_if_match([]), Precondition::None);
        assert!(Precondition::from_if_match(["\"x\", \"abc\""]).holds(tag));
        assert!(!Precondition::from_if_match(["W/\"abc\""]).holds(tag));
        assert!(!Precondition::from_if_match(["abc"]).holds(tag));
        assert!(!Precondition::from_if_match(["\"x\""]).holds(tag));
        assert_eq!(Precondition::from_if_match([" * "]), Precondition::Exists);
        assert!(Precondition::from_if_match(["\"x\"", "\"abc\""]).holds(tag));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match_names("W/\"abc\"", "\"abc\""));
        assert!(none_match_names("\"x\",\"abc\"", "\"abc\""));
        assert!(none_match_names("*", "\"abc\""));
        assert!(!none_match_names("\"x\"", "\"abc\""));
        assert!(!none_match_names("abc", "\"abc\""));
    }
}
