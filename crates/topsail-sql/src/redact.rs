//! Database URLs without their secrets, for errors and `Debug` output: a
//! URL's password never reaches a log line.

/// `url` with its password replaced by `***`, in the user-info part
/// (`postgres://user:secret@host/db`) and in a `password=` parameter. A URL
/// whose shape is unexpected keeps only its scheme.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite::memory:`, `sqlite:file.db`: no user info.
        return redact_query(url);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    redact_query(&format!("{scheme}://{authority}{tail}"))
}

/// Replaces the value of every `password=` query parameter.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_replaced() {
        assert_eq!(
            redacted("postgres://app:s3cret@db.example:5432/zoo?sslmode=require"),
            "postgres://app:***@db.example:5432/zoo?sslmode=require"
        );
        assert_eq!(
            redacted("postgresql://db/zoo?user=app&password=s3cret"),
            "postgresql://db/zoo?user=app&password=***"
        );
        assert_eq!(
            redacted("postgres://a:b:c@host"),
            "postgres://a:***@host",
            "a colon in the password"
        );
        assert_eq!(
            redacted("postgres://p%40ss:x@h/d"),
            "postgres://p%40ss:***@h/d"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "sqlite://zoo.sqlite",
            "sqlite::memory:",
            "postgres://postgres@127.0.0.1/zoo",
            "mysql://host/db",
        ] {
            assert_eq!(redacted(url), url);
        }
    }
}
