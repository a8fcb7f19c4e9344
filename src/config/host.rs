//! What a target's `host` (and a `/probe` target) may be: a DNS name or an IP literal.

use toml::Spanned;

use super::{Invalid, invalid};

pub(super) fn validate_host(host: &Spanned<String>) -> Result<String, Invalid> {
    let text = host.get_ref().as_str();
    // An IPv6 literal may come with brackets, as in URLs; the label carries it without.
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if text.is_empty() {
        return invalid(host.span(), "host must not be empty");
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(text.to_string());
    }
    if !valid_host_name(text) {
        return invalid(
            host.span(),
            format!("invalid host {text:?}: expected a DNS name, an IPv4 or an IPv6 address"),
        );
    }
    Ok(text.to_string())
}

/// Whether `text` is a well-formed DNS name: dot-separated labels of letters, digits, `-` and
/// `_`, each 1 to 63 characters, 253 in all.
pub fn valid_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
