//! The security headers of the responses: `X-Content-Type-Options: nosniff` on every one, and
//! on the status page a Content-Security-Policy that lets only its own inline style and script
//! run, and no page frame it.
//!
//! The status page inlines `style.css` and `script.js` (see `page.html`); the policy names
//! them by the SHA-256 of their exact text in the page, computed once from the same files the
//! template includes. A hash, not a nonce: the page stays a pure function of its inputs, and
//! not `'unsafe-inline'`: an injected script or style, should escaping ever fail, does not run.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::{self, HeaderValue};
use sha2::{Digest, Sha256};

/// The status page's inline `<style>`, as `page.html` includes it.
const STYLE: &str = include_str!("../status/style.css");
/// The status page's inline `<script>`, as `page.html` includes it.
const SCRIPT: &str = include_str!("../status/script.js");

/// The text between `<style>` and `</style>` (or the script's tags) of the page: `page.html`
/// puts the include on a line of its own, and askama drops the included file's last newline.
fn inline_text(file: &str) -> String {
    format!("\n{}\n", file.strip_suffix('\n').unwrap_or(file))
}

/// A CSP hash source for `text`: `'sha256-<base64>'`.
fn hash_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The status page's policy: nothing but its inline style and script, no framing, no base or
/// form targets. Navigation (its links, the meta refresh) is not governed by CSP.
fn status_page_policy(style: &str, script: &str) -> String {
    format!(
        "default-src 'none'; style-src {}; script-src {}; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        hash_source(&inline_text(style)),
        hash_source(&inline_text(script)),
    )
}

static STATUS_PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    // Quotes, letters, digits and base64 only: always a valid header value. Should it not be,
    // the page is served under the strictest policy (unstyled), never without one.
    HeaderValue::try_from(status_page_policy(STYLE, SCRIPT))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
});

/// Adds the headers every response gets: `X-Content-Type-Options: nosniff`, so that a
/// browser takes the content type as sent (text stays text).
pub(crate) fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Adds the status page's headers: its Content-Security-Policy, and `X-Frame-Options: DENY`
/// for browsers that predate `frame-ancestors`.
pub(crate) fn add_status_page_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, STATUS_PAGE_CSP.clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_hashes_of_the_inline_texts() {
        // The CSP spec's own example: sha256 of "alert('Hello, world.');".
        assert_eq!(
            hash_source("alert('Hello, world.');"),
            "'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"
        );
        assert_eq!(inline_text("a{}\n"), "\na{}\n");
        assert_eq!(inline_text("a{}"), "\na{}\n");
        let policy = status_page_policy("s\n", "j\n");
        assert_eq!(
            policy,
            format!(
                "default-src 'none'; style-src {}; script-src {}; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'",
                hash_source("\ns\n"),
                hash_source("\nj\n")
            )
        );
        let mut headers = HeaderMap::new();
        add_status_page_headers(&mut headers);
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            status_page_policy(STYLE, SCRIPT).as_str()
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
}
