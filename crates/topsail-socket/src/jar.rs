/*!
A socket's cookies, kept as Sails keeps a socket's session: those of its
handshake, updated by the `Set-Cookie` headers of every answer to it, and
sent with each of its later requests. A sign-in made over a socket (an
answer that sets a session cookie) then holds for that socket, and a
sign-out (a cookie expired) ends it. Each socket has its own jar; two
sockets opened with the same cookie share what the server keeps under it.
*/

use std::sync::Mutex;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, header};

/// The most cookies and bytes a jar keeps: what a browser keeps per site.
const MAX_COOKIES: usize = 50;
const MAX_BYTES: usize = 8 * 1024;

/// One socket's cookies, in the order they were set, and the `Cookie`
/// header they make (rendered when they change, not on every request).
#[derive(Debug, Default)]
pub(crate) struct Jar(Mutex<Cookies>);

#[derive(Debug, Default)]
struct Cookies {
    pairs: Vec<(String, String)>,
    header: Option<HeaderValue>,
}

impl Cookies {
    fn new(pairs: Vec<(String, String)>) -> Self {
        let mut c = Cookies {
            pairs,
            header: None,
        };
        c.render();
        c
    }

    fn render(&mut self) {
        let text: Vec<String> = self.pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        self.header = if text.is_empty() {
            None
        } else {
            HeaderValue::from_str(&text.join("; ")).ok()
        };
    }
}

impl Jar {
    /// The cookies of a handshake's `Cookie` header.
    pub(crate) fn from_header(cookie: Option<&HeaderValue>) -> Self {
        let pairs = cookie
            .and_then(|c| c.to_str().ok())
            .map(|c| {
                c.split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Jar(Mutex::new(Cookies::new(pairs)))
    }

    fn cookies(&self) -> std::sync::MutexGuard<'_, Cookies> {
        // Consistent after any panic: the header is rendered after a change.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of cookie `name`.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        let jar = self.cookies();
        jar.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The `Cookie` header to send, if there is a cookie.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        self.cookies().header.clone()
    }

    /// Takes in the `Set-Cookie` headers of an answer: a cookie set is
    /// added or replaced, one expired (`Max-Age` of 0 or less, or an
    /// `Expires` in the past) is removed. True when a cookie's value
    /// changed, came or went (a session that only extends its expiry sends
    /// the same value again: no change).
    pub(crate) fn update(&self, headers: &HeaderMap) -> bool {
        if !headers.contains_key(header::SET_COOKIE) {
            return false;
        }
        let mut jar = self.cookies();
        let sorted = |pairs: &[(String, String)]| {
            let mut p = pairs.to_vec();
            p.sort();
            p
        };
        let before = sorted(&jar.pairs);
        let cookies = &mut jar.pairs;
        for set in headers.get_all(header::SET_COOKIE) {
            let Some((name, value, expired)) = set.to_str().ok().and_then(parse_set_cookie) else {
                continue;
            };
            cookies.retain(|(n, _)| *n != name);
            if !expired {
                cookies.push((name, value));
            }
        }
        // Bounded as a browser bounds a site's cookies: the oldest go.
        while cookies.len() > MAX_COOKIES
            || cookies
                .iter()
                .map(|(n, v)| n.len() + v.len() + 2)
                .sum::<usize>()
                > MAX_BYTES
        {
            cookies.remove(0);
        }
        jar.render();
        sorted(&jar.pairs) != before
    }
}

/// `name`, `value` and whether it is expired, from a `Set-Cookie` value.
fn parse_set_cookie(set: &str) -> Option<(String, String, bool)> {
    let mut parts = set.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    if name.is_empty() {
        return None;
    }
    let mut expired = false;
    for attr in parts {
        let (key, val) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
        if key.eq_ignore_ascii_case("max-age") {
            expired = val.trim().parse::<i64>().is_ok_and(|s| s <= 0);
        } else if key.eq_ignore_ascii_case("expires") && !expired {
            expired = httpdate::parse_http_date(val.trim()).is_ok_and(|t| t <= SystemTime::now());
        }
    }
    Some((name.trim().to_owned(), value.trim().to_owned(), expired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::SET_COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn answers_set_replace_and_expire_cookies() {
        let jar = Jar::from_header(Some(&HeaderValue::from_static("sails.sid=abc; theme=dark")));
        assert!(jar.update(&set(&["sid=one; Path=/; HttpOnly", "theme=light"])));
        assert_eq!(jar.header().unwrap(), "sails.sid=abc; sid=one; theme=light");
        assert!(
            !jar.update(&set(&["sid=one; Max-Age=60"])),
            "the same value again (an expiry extended) is no change"
        );
        assert!(jar.update(&set(&["sid=two; Max-Age=3600"])));
        assert_eq!(jar.header().unwrap(), "sails.sid=abc; theme=light; sid=two");
        jar.update(&set(&[
            "sid=; Max-Age=0",
            "theme=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ]));
        assert_eq!(jar.header().unwrap(), "sails.sid=abc");
        jar.update(&set(&["sails.sid=; Max-Age=-1"]));
        assert_eq!(jar.header(), None);
        assert!(!jar.update(&set(&["=nameless", "garbage"])));
        assert_eq!(jar.header(), None);
    }

    #[test]
    fn a_jar_keeps_at_most_what_a_browser_would() {
        let jar = Jar::default();
        let many: Vec<String> = (0..80)
            .map(|i| format!("c{i}={}", "v".repeat(100)))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        jar.update(&set(&many));
        let kept = jar.header().unwrap();
        let kept = kept.to_str().unwrap();
        assert!(kept.len() <= MAX_BYTES + 2 * MAX_COOKIES, "{}", kept.len());
        assert!(kept.contains("c79="), "the newest stay");
        assert!(!kept.contains("c0="), "the oldest go");
    }
}
