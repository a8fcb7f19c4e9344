//! The web configuration file shared by Prometheus exporters (exporter-toolkit's YAML format):
//! TLS and basic authentication for every endpoint.
//!
//! # The format
//!
//! ```yaml
//! tls_server_config:                 # optional; when present, every connection is TLS
//!   cert_file: server.crt            # required: PEM, the server certificate then its chain
//!   key_file: server.key             # required: PEM private key (PKCS#8, PKCS#1 or SEC1)
//!   client_auth_type: NoClientCert   # default; see below
//!   client_ca_file: ca.crt           # PEM CA certificates that client certificates chain to
//!   min_version: TLS12               # TLS12 (default) or TLS13
//!   max_version: TLS13               # TLS12 or TLS13 (default)
//!   cipher_suites: [...]             # TLS 1.2 suites by their IANA (Go) names, in order
//!   prefer_server_cipher_suites: true  # default true: the server's order wins
//!   curve_preferences: [...]         # X25519, CurveP256, CurveP384, in order
//! http_server_config:                # optional
//!   http2: true                      # accepted and ignored: the server speaks HTTP/1.1 only
//!   headers: {}                      # only an empty map: extra response headers unsupported
//! basic_auth_users:                  # optional; when non-empty, every request needs one
//!   alice: $2y$10$...                # user: bcrypt hash ($2a$, $2b$, $2x$, $2y$; cost 4-31)
//! ```
//!
//! Relative paths are relative to the directory of the web config file. The file is read once
//! at start: changing it (or the certificates) takes a restart. An empty file means plain HTTP
//! without authentication.
//!
//! Differences from exporter-toolkit, every one an error at start, never a silent change:
//! - Unknown fields are errors, as in exporter-toolkit; the fields that newer exporter-toolkit
//!   releases added (`cert`, `key`, `client_ca`, `client_allowed_sans`, `rate_limit`) are
//!   unknown here, as they are to promtool 2.42.
//! - `min_version`/`max_version` `TLS10` and `TLS11` are rejected: rustls speaks only TLS 1.2
//!   and 1.3. `min_version` above `max_version` is rejected.
//! - `cipher_suites` configures the TLS 1.2 suites only (as in Go): the TLS 1.3 suites are
//!   always on, and TLS 1.3 names are accepted without effect. Only the suites rustls offers
//!   are accepted (the ECDHE AES-GCM and ChaCha20-Poly1305 ones); CBC and RSA key exchange
//!   suites are rejected. When TLS 1.2 is enabled the list must keep a TLS 1.2 suite usable
//!   with the certificate's key.
//! - `curve_preferences`: `CurveP521` is rejected (rustls with ring has no P-521).
//! - A `tls_server_config` needs `cert_file` and `key_file` (exporter-toolkit silently serves
//!   plain HTTP when both are missing).
//! - `client_auth_type` `VerifyClientCertIfGiven` and `RequireAndVerifyClientCert` need
//!   `client_ca_file` (Go would fall back to the system roots).
//! - `http_server_config.headers` must be empty: port_exporter cannot add response headers.
//! - A user name with a `:` is rejected: basic auth cannot carry it.
//!
//! Basic auth without `tls_server_config` works, but sends passwords in clear text (base64):
//! loading such a file logs a warning.
//!
//! The parts: `tls` builds the TLS acceptor (and tells what each `client_auth_type` does),
//! `basic_auth` checks credentials, `headers` adds the security headers of every response.

mod basic_auth;
mod headers;
#[cfg(test)]
mod testing;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hyper::header::HeaderValue;
use serde::Deserialize;

pub use basic_auth::Verdict;
use basic_auth::{BasicAuth, Users, basic_credentials};
pub(crate) use headers::{add_security_headers, add_status_page_headers};
use tls::RawTls;

/// A loaded web configuration.
pub struct WebConfig {
    tls: Option<tokio_rustls::TlsAcceptor>,
    basic_auth: Option<BasicAuth>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field(
                "basic_auth_users",
                &self.basic_auth.as_ref().map(BasicAuth::user_names),
            )
            .finish()
    }
}

/// Why a web configuration could not be loaded. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: cannot read web config file: {error}")]
    Read { path: String, error: std::io::Error },
    /// The YAML is malformed, or a field is unknown, of the wrong type or has a bad value.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The fields do not fit together, or a certificate or key cannot be used.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// The thread that runs bcrypt for `basic_auth_users` could not be started.
    #[error("{path}: cannot start the bcrypt thread: {error}")]
    Thread { path: String, error: std::io::Error },
}

impl WebConfig {
    /// Reads and validates the file at `path` (certificates and keys included).
    pub fn from_file(path: &Path) -> Result<WebConfig, WebConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| WebConfigError::Read {
            path: shown.clone(),
            error,
        })?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        WebConfig::parse(&text, &shown, &base)
    }

    /// Parses `text`; `origin` names it in errors and relative paths are taken from `base`.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<WebConfig, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let raw = parse_yaml(text, origin)?;
        if let Some(http) = &raw.http_server_config
            && let Some(headers) = &http.headers
            && let Some(name) = headers.keys().next()
        {
            return Err(invalid(format!(
                "http_server_config.headers: port_exporter cannot add response headers \
                 (\"{name}\"); remove the headers"
            )));
        }
        let tls = raw
            .tls_server_config
            .map(|tls| tls.build(base))
            .transpose()
            .map_err(invalid)?;
        let users = raw.basic_auth_users.map(|u| u.0).unwrap_or_default();
        if !users.is_empty() && tls.is_none() {
            tracing::warn!(
                web_config = origin,
                "basic_auth_users without tls_server_config: passwords travel in clear text \
                 over plain HTTP; add a tls_server_config or serve behind a TLS proxy"
            );
        }
        let basic_auth = (!users.is_empty())
            .then(|| BasicAuth::new(users))
            .transpose()
            .map_err(|error| WebConfigError::Thread {
                path: origin.to_string(),
                error,
            })?;
        Ok(WebConfig { tls, basic_auth })
    }

    /// The TLS acceptor, when the file has a `tls_server_config`.
    pub fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Whether the file asks for basic auth (has `basic_auth_users`).
    pub fn requires_auth(&self) -> bool {
        self.basic_auth.is_some()
    }

    /// What a request with this `Authorization` header gets: always [`Verdict::Passed`] when
    /// the file has no `basic_auth_users`. Credentials that passed before are answered at
    /// once, from the cache; others wait for a bcrypt check (tens of milliseconds, on the
    /// bcrypt thread), or get [`Verdict::Busy`] at once when that thread is taken.
    pub async fn authorize(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some(auth) = &self.basic_auth else {
            return Verdict::Passed;
        };
        match authorization.and_then(|v| basic_credentials(v.as_bytes())) {
            Some((user, password)) => auth.check(&user, &password).await,
            None => Verdict::Refused,
        }
    }
}

/// Parses the YAML into the raw structs, with the position of the error where there is one.
fn parse_yaml(text: &str, origin: &str) -> Result<RawConfig, WebConfigError> {
    // An empty document (or one of comments only) is an empty config, as in exporter-toolkit.
    let empty = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if empty {
        return Ok(RawConfig::default());
    }
    serde_norway::from_str(text).map_err(|error| {
        let (line, column) = error.location().map_or((1, 1), |l| (l.line(), l.column()));
        WebConfigError::Parse {
            path: origin.to_string(),
            line,
            column,
            message: without_marks(&error.to_string()),
        }
    })
}

/// `message` without the " at line L column C" marks: the location is in the error's prefix.
fn without_marks(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let line_digits = digits(after);
        match after[line_digits..].strip_prefix(" column ") {
            Some(column) if line_digits > 0 && digits(column) > 0 => {
                rest = &column[digits(column)..];
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of tls_server_config, http_server_config and basic_auth_users"
)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<Users>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of HTTP server settings")]
struct RawHttp {
    /// Accepted for compatibility; the server speaks HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use rcgen::KeyPair;

    use super::*;
    use crate::web::security::testing::Setup;

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let setup = Setup::new();
        for text in [
            "",
            "\n# only a comment\n",
            "basic_auth_users:\n",
            "tls_server_config:\n",
        ] {
            let config = setup.load(text).unwrap();
            assert!(config.tls().is_none(), "{text:?}");
            assert!(!config.requires_auth(), "{text:?}");
            assert!(config.authorized(None), "{text:?}");
        }
    }
    #[test]
    fn http_server_config_http2_and_empty_headers_are_accepted() {
        let setup = Setup::new();
        let text = "http_server_config:\n  http2: false\n  headers: {}\n";
        assert!(setup.load(text).unwrap().tls().is_none());
    }

    #[test]
    fn yaml_errors_name_file_line_and_column() {
        let setup = Setup::new();
        let cases = [
            (
                "tls_server_config:\n  cert_file: \"a\n",
                ":3:1: found unexpected end of stream",
            ),
            (
                "tls_server_config:\n  cert_file: a\n key_file: b\n",
                ":3:2: did not find expected key",
            ),
            (
                "basic_auth_users:\n\t- a\n",
                ":2:1: found character that cannot start any token",
            ),
            ("tls_server_config:\n  cert_file: [a\n", ":2:14: "),
            ("tls_server_config: [\n", ":1:20: "),
            ("tls_server_config:\n  cert_file: a\n  foo: 1\n", ":3:3: "),
            ("unknown: 1\n", ":1:1: "),
            ("- a\n", ":1:1: "),
            (
                "tls_server_config:\n  min_version: TLS10\n",
                ":2:3: tls_server_config: TLS version TLS10",
            ),
        ];
        for (text, prefix) in cases {
            let message = setup.error(text);
            assert!(message.starts_with(prefix), "{text:?}: {message}");
            assert!(!message.contains(" at line "), "{message}");
        }
    }

    #[test]
    fn every_bad_field_is_an_error_that_says_what_is_wrong() {
        let setup = Setup::new();
        std::fs::write(setup.path("empty.pem"), "").unwrap();
        let other_key = KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(setup.path("other.key"), other_key).unwrap();
        let tls = |extra: &str| setup.tls(extra);
        let cases: Vec<(String, &str)> = vec![
            ("rate_limit:\n  burst: 1\n".into(), "unknown field `rate_limit`"),
            (tls("  client_allowed_sans: [a]\n"), "unknown field `client_allowed_sans`"),
            (tls("  cert: x\n"), "unknown field `cert`"),
            ("http_server_config:\n  foo: 1\n".into(), "unknown field `foo`"),
            (tls("  min_version: TLS10\n"), "TLS10 is not supported: rustls speaks only TLS12 and TLS13"),
            (tls("  max_version: TLS11\n"), "TLS11 is not supported"),
            (tls("  min_version: SSL3\n"), "unknown TLS version \"SSL3\": expected TLS12 or TLS13"),
            (
                tls("  min_version: TLS13\n  max_version: TLS12\n"),
                "min_version TLS13 is above max_version TLS12",
            ),
            (
                tls("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"),
                "unsupported cipher suite \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\": expected one of",
            ),
            (tls("  cipher_suites: [NOPE]\n"), "unsupported cipher suite \"NOPE\""),
            (
                tls("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
                "no TLS 1.2 suite works with the certificate's ECDSA key",
            ),
            (
                tls("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"),
                "no TLS 1.2 suite works with the certificate's ECDSA key",
            ),
            (tls("  curve_preferences: [CurveP521]\n"), "CurveP521 is not supported by rustls"),
            (tls("  curve_preferences: [P256]\n"), "unknown curve \"P256\""),
            (tls("  client_auth_type: Always\n"), "invalid client_auth_type \"Always\""),
            (
                tls("  client_ca_file: client-ca.crt\n"),
                "client_ca_file is set but client_auth_type is NoClientCert",
            ),
            (
                tls("  client_auth_type: RequireAndVerifyClientCert\n"),
                "client_auth_type RequireAndVerifyClientCert needs client_ca_file",
            ),
            (
                tls("  client_auth_type: VerifyClientCertIfGiven\n"),
                "client_auth_type VerifyClientCertIfGiven needs client_ca_file",
            ),
            (
                tls("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.crt\n"),
                "client_ca_file",
            ),
            (
                tls("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty.pem\n"),
                "empty.pem: no PEM certificate in it",
            ),
            (tls("  prefer_server_cipher_suites: maybe\n"), "invalid type"),
            ("tls_server_config: {}\n".into(), "cert_file is missing"),
            ("tls_server_config:\n  min_version: TLS13\n".into(), "cert_file is missing"),
            ("tls_server_config:\n  cert_file: server.crt\n".into(), "key_file is missing"),
            ("tls_server_config:\n  cert_file: ' '\n".into(), "cert_file is blank"),
            (
                "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into(),
                "missing.crt",
            ),
            (
                "tls_server_config:\n  cert_file: empty.pem\n  key_file: server.key\n".into(),
                "empty.pem: no PEM certificate in it",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".into(),
                "server.crt: no usable private key",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n".into(),
                "cannot be used together",
            ),
            ("basic_auth_users:\n  alice: notahash\n".into(), "basic_auth_users: user \"alice\": not a bcrypt hash"),
            (
                "basic_auth_users:\n  alice: $2b$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n"
                    .into(),
                "bcrypt cost 3 is outside the allowed range 4 to 31",
            ),
            (
                format!(
                    "basic_auth_users:\n  'a:b': {}\n",
                    bcrypt::hash("x", 4).unwrap()
                ),
                "user name \"a:b\" contains ':'",
            ),
            (
                format!(
                    "basic_auth_users:\n  a: {h}\n  a: {h}\n",
                    h = bcrypt::hash("x", 4).unwrap()
                ),
                ":2:3: basic_auth_users: user \"a\" is listed twice",
            ),
            ("basic_auth_users: [a]\n".into(), "a map of user names to bcrypt hashes"),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: deny\n".into(),
                "http_server_config.headers: port_exporter cannot add response headers",
            ),
        ];
        for (text, expected) in &cases {
            let message = setup.error(text);
            assert!(
                message.contains(expected),
                "{text:?}\n  gave: {message}\n  expected: {expected}"
            );
        }
    }

    /// A `Write` into a shared buffer, for the log lines of a test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What loading `text` logs, at warn level and above.
    fn warnings_of(setup: &Setup, text: &str) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || setup.load(text).unwrap());
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn basic_auth_without_tls_warns_that_passwords_travel_in_clear_text() {
        let setup = Setup::new();
        let users = format!(
            "basic_auth_users:\n  alice: {}\n",
            bcrypt::hash("x", 4).unwrap()
        );
        let log = warnings_of(&setup, &users);
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("passwords travel in clear text"), "{log}");
        assert!(log.contains("web.yml"), "the file is named: {log}");
        for quiet in [setup.tls(&users), setup.tls(""), String::new()] {
            let log = warnings_of(&setup, &quiet);
            assert!(log.is_empty(), "{quiet}: {log}");
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let path = Path::new("/nonexistent/web.yml");
        let message = WebConfig::from_file(path).unwrap_err().to_string();
        assert!(
            message.starts_with("/nonexistent/web.yml: cannot read web config file: "),
            "{message}"
        );
    }

    #[test]
    fn marks_are_dropped_from_messages() {
        assert_eq!(
            without_marks("found x at line 3 column 1, while y at line 2 column 14"),
            "found x, while y"
        );
        assert_eq!(without_marks("at line 3 at line x"), "at line 3 at line x");
        assert_eq!(without_marks("plain"), "plain");
    }
}
