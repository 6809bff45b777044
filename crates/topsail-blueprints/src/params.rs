/*!
Request parameters as Sails sees them: query strings with the
`qs` bracket syntax (`?name[contains]=o`, `sort[]=age DESC`), JSON and
urlencoded bodies, and route parameters, merged as `req.allParams()`.
*/

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// How deep `a[b][c]` nesting goes before the rest stays a literal key
/// (the `qs` default).
const MAX_DEPTH: usize = 5;
/// How many `key=value` pairs are read (the `qs` default).
const MAX_PAIRS: usize = 1000;
/// The highest `a[N]` index that makes an array (the `qs` default).
const MAX_INDEX: usize = 20;

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// Splits `a[b][]` into `["a", "b", ""]`, keeping anything past
/// [`MAX_DEPTH`] (or malformed) as one literal segment.
fn key_path(key: &str) -> Vec<String> {
    let Some(open) = key.find('[').filter(|&i| i > 0) else {
        return vec![key.to_owned()];
    };
    let mut out = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        if out.len() > MAX_DEPTH {
            break;
        }
        let Some(close) = stripped.find(']') else {
            break;
        };
        out.push(stripped[..close].to_owned());
        rest = &stripped[close + 1..];
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

fn insert(target: &mut Value, path: &[String], value: Value) {
    let Some((head, tail)) = path.split_first() else {
        return;
    };
    // `a[]=x` appends; `a[3]=x` (small index) becomes an array slot.
    if let Value::Array(items) = target {
        if head.is_empty() || head.parse::<usize>().is_ok_and(|i| i <= MAX_INDEX) {
            if tail.is_empty() {
                items.push(value);
            } else {
                let mut child = Value::Object(Map::new());
                insert(&mut child, tail, value);
                items.push(child);
            }
            return;
        }
        // A named key under an array turns it into an object, as qs does.
        let map: Map<String, Value> = std::mem::take(items)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect();
        *target = Value::Object(map);
    }
    let Value::Object(map) = target else {
        // A scalar met a nested key (`a=1&a[b]=2`): qs keeps both in an array.
        let old = std::mem::take(target);
        let mut obj = Value::Object(Map::new());
        insert(&mut obj, path, value);
        *target = Value::Array(vec![old, obj]);
        return;
    };
    if tail.is_empty() {
        match map.get_mut(head.as_str()) {
            // Repeated keys collect into an array.
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let old = std::mem::take(existing);
                *existing = Value::Array(vec![old, value]);
            }
            None => {
                map.insert(head.clone(), value);
            }
        }
        return;
    }
    let next_is_array =
        tail[0].is_empty() || tail[0].parse::<usize>().is_ok_and(|i| i <= MAX_INDEX);
    let child = map.entry(head.clone()).or_insert_with(|| {
        if next_is_array {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    });
    insert(child, tail, value);
}

/// Parses a query string (or urlencoded body) the way `qs` does.
pub fn parse_qs(qs: &str) -> Map<String, Value> {
    let mut root = Value::Object(Map::new());
    for pair in qs.split('&').filter(|p| !p.is_empty()).take(MAX_PAIRS) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k);
        if key.is_empty() {
            continue;
        }
        insert(&mut root, &key_path(&key), Value::String(decode(v)));
    }
    match root {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The parameters of one request.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Parsed query string.
    pub query: Map<String, Value>,
    /// Parsed body: an object, an array, or `Null` when empty.
    pub body: Value,
    /// Route parameters under their Sails names (`id`, `parentid`, `childid`).
    pub route: Map<String, Value>,
}

impl Params {
    /// `req.allParams()`: query, then body, then route parameters.
    pub fn all(&self) -> Map<String, Value> {
        let mut out = self.query.clone();
        if let Value::Object(b) = &self.body {
            for (k, v) in b {
                out.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &self.route {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// `req.param(name)`: route, then body, then query.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.route
            .get(name)
            .or_else(|| self.body.as_object().and_then(|b| b.get(name)))
            .or_else(|| self.query.get(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_pairs() {
        assert_eq!(
            Value::Object(parse_qs("name=Bob&age=5")),
            json!({"name": "Bob", "age": "5"})
        );
        assert_eq!(
            Value::Object(parse_qs("sort=name%20ASC&q=a+b")),
            json!({"sort": "name ASC", "q": "a b"})
        );
    }

    #[test]
    fn bracket_syntax_nests() {
        assert_eq!(
            Value::Object(parse_qs("name[contains]=o")),
            json!({"name": {"contains": "o"}})
        );
        assert_eq!(
            Value::Object(parse_qs("age[%3E]=3&age[%3C]=9")),
            json!({"age": {">": "3", "<": "9"}})
        );
        assert_eq!(
            Value::Object(parse_qs("sort[]=age%20DESC&sort[]=name")),
            json!({"sort": ["age DESC", "name"]})
        );
        assert_eq!(
            Value::Object(parse_qs("id[in][]=1&id[in][]=2")),
            json!({"id": {"in": ["1", "2"]}})
        );
    }

    #[test]
    fn repeated_keys_become_arrays() {
        assert_eq!(
            Value::Object(parse_qs("a=1&a=2&a=3")),
            json!({"a": ["1", "2", "3"]})
        );
    }

    #[test]
    fn deep_keys_stop_at_the_depth_limit() {
        // As qs: five levels of brackets, the rest stays one literal key.
        assert_eq!(
            Value::Object(parse_qs("a[b][c][d][e][f][g][h]=1")),
            json!({"a": {"b": {"c": {"d": {"e": {"f": {"[g][h]": "1"}}}}}}})
        );
    }

    #[test]
    fn hostile_input_does_not_panic() {
        for q in [
            "[",
            "]=",
            "a[",
            "a]",
            "a[]]",
            "=x",
            "%zz=%",
            "a[b]=1&a=2",
            "a=1&a[b]=2",
            "a[0]=x&a[b]=y",
            "&&&",
        ] {
            let _ = parse_qs(q);
        }
    }

    #[test]
    fn params_precedence_matches_sails() {
        let p = Params {
            query: parse_qs("name=q&age=1"),
            body: json!({"name": "b"}),
            route: json!({"id": "7"}).as_object().cloned().unwrap_or_default(),
        };
        assert_eq!(p.get("name"), Some(&json!("b")));
        assert_eq!(p.get("id"), Some(&json!("7")));
        let all = p.all();
        assert_eq!(all.get("name"), Some(&json!("b")));
        assert_eq!(all.get("age"), Some(&json!("1")));
    }

    /// The query-string parser over any text: it never panics, keeps to its
    /// bounds, and reads plain pairs back exactly.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Text rich in the characters that mean something to the parser.
        fn qs_text() -> impl Strategy<Value = String> {
            let c = prop_oneof![
                prop::sample::select(vec!['&', '=', '[', ']', '%', '+', 'a', '0', '1']),
                any::<char>(),
            ];
            prop::collection::vec(c, 0..300).prop_map(String::from_iter)
        }

        fn depth(v: &Value) -> usize {
            match v {
                Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
                Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }

        fn leaves(v: &Value) -> usize {
            match v {
                Value::Object(m) => m.values().map(leaves).sum(),
                Value::Array(a) => a.iter().map(leaves).sum(),
                _ => 1,
            }
        }

        fn name() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::char::range('a', 'z'), 1..8).prop_map(String::from_iter)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn any_text_parses_within_the_bounds(qs in qs_text()) {
                let parsed = Value::Object(parse_qs(&qs));
                // The root, MAX_DEPTH levels of brackets, the literal rest.
                prop_assert!(depth(&parsed) <= MAX_DEPTH + 3, "{parsed}");
                prop_assert!(leaves(&parsed) <= MAX_PAIRS);
            }

            #[test]
            fn plain_pairs_read_back(pairs in prop::collection::btree_map(name(), any::<String>(), 1..10)) {
                use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
                let qs: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
                    .collect();
                let parsed = parse_qs(&qs.join("&"));
                let expected: Map<String, Value> = pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                prop_assert_eq!(parsed, expected);
            }
        }
    }
}
