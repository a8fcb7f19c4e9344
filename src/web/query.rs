//! Query strings (`?name=value&...`) decoded into names and values, and malformed ones refused.
//!
//! The decoding is `form_urlencoded`'s: `+` is a space and `%XX` a byte. It is lenient, as the
//! URL standard asks: a `%` without two hex digits stays as it is, and bytes that are not UTF-8
//! become U+FFFD. Here such a query is malformed instead ([`well_formed`]), so that a `/probe`
//! target means exactly what was sent and a bad one gets a 400.

/// The percent-decoded value of `name` in a query string; `None` when it is not there or the
/// query is malformed.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_params(query)?
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Every (name, value) of a query string, percent-decoded; `None` if an escape is malformed.
pub(super) fn query_params(query: Option<&str>) -> Option<Vec<(String, String)>> {
    let query = query.unwrap_or_default();
    if !well_formed(query) {
        return None;
    }
    let params = form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    Some(params)
}

/// Whether every `%` in `query` starts a `%XX` escape, and every run of escapes decodes to
/// UTF-8: the two cases `form_urlencoded` would pass silently.
///
/// Checking runs of escapes alone is enough: the rest of the query is a `&str`, whole
/// characters, so the decoded query is UTF-8 exactly when each run is.
fn well_formed(query: &str) -> bool {
    let mut rest = query.as_bytes();
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        rest = &rest[at..];
        let mut run = Vec::new();
        while let [b'%', high, low, tail @ ..] = rest {
            let (Some(high), Some(low)) = (hex(*high), hex(*low)) else {
                return false;
            };
            run.push((high << 4) | low);
            rest = tail;
        }
        // A `%` with fewer than two characters after it.
        if rest.first() == Some(&b'%') || std::str::from_utf8(&run).is_err() {
            return false;
        }
    }
    true
}

/// The value of a hex digit.
fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("state=open"), "state").as_deref(),
            Some("open")
        );
        assert_eq!(
            query_param(Some("a=1&state=cl%6Fsed"), "state").as_deref(),
            Some("closed")
        );
        assert_eq!(
            query_param(Some("target=a+b"), "target").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param(Some("state"), "state").as_deref(), Some(""));
        assert_eq!(query_param(Some("state=%zz"), "state"), None);
        assert_eq!(query_param(Some("other=1"), "state"), None);
        assert_eq!(query_param(None, "state"), None);
    }

    #[test]
    fn names_values_and_empty_pairs_split_as_before() {
        let params = |q: &str| query_params(Some(q)).unwrap();
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(params(""), owned(&[]));
        assert_eq!(params("&&a=1&&"), owned(&[("a", "1")]));
        assert_eq!(params("=x&a==b"), owned(&[("", "x"), ("a", "=b")]));
        assert_eq!(params("%74arget=%26%3D"), owned(&[("target", "&=")]));
        assert_eq!(params("h=ex%C3%A4mple"), owned(&[("h", "exämple")]));
        assert_eq!(params("h=ex%c3%a4mple"), owned(&[("h", "exämple")]));
        // A raw (unescaped) character next to escapes, and U+FFFD sent as such.
        assert_eq!(params("h=ä%C3%A4ä"), owned(&[("h", "äää")]));
        assert_eq!(params("h=%EF%BF%BD"), owned(&[("h", "\u{FFFD}")]));
    }

    #[test]
    fn malformed_escapes_and_bytes_that_are_not_utf8_are_refused() {
        for query in [
            "%",
            "a=%",
            "a=%4",
            "a=%zz",
            "a=%G0",
            "a=1%",
            "%%41",
            "a=%C0%AE",
            "a=%FF",
            "a=%C3",
            "a=%C3&b=%A4",
            "a=%C3ä",
            "a=%E2%EF%BF%BD",
            // Not hex, though `u8::from_str_radix("+a", 16)` would take it.
            "a=%+a",
        ] {
            assert_eq!(query_params(Some(query)), None, "{query}");
        }
    }
}
