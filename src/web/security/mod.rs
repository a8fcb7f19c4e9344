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
//! # Client certificates
//!
//! | `client_auth_type` | handshake |
//! |---|---|
//! | `NoClientCert` (default, or `""`) | no certificate asked for; `client_ca_file` is an error |
//! | `RequestClientCert` | asked for, not required, not verified |
//! | `RequireAnyClientCert` (alias `RequireClientCert`) | required, not verified against a CA (only that the client holds its key) |
//! | `VerifyClientCertIfGiven` | not required; when given, must chain to `client_ca_file` |
//! | `RequireAndVerifyClientCert` | required, must chain to `client_ca_file` |
//!
//! # Basic auth
//!
//! A request passes when its `Authorization: Basic` credentials match a user's bcrypt hash.
//! Successful checks are cached (by a salted SHA-256 of user and password, never the
//! plaintext), so only the first request of a user pays for bcrypt. An unknown user is checked
//! against another user's hash, so that it takes as long as a wrong password and timing does
//! not tell which users exist. bcrypt runs one at a time, off the async worker threads.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::header::HeaderValue;
use rustls::crypto::ring::{self as ring_provider, kx_group};
use rustls::crypto::{SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// How many successful (user, password) checks are remembered; the cache is emptied when full.
const AUTH_CACHE_LIMIT: usize = 4096;

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
                &self
                    .basic_auth
                    .as_ref()
                    .map(|a| a.users.keys().collect::<Vec<_>>()),
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
        Ok(WebConfig {
            tls,
            basic_auth: (!users.is_empty()).then(|| BasicAuth::new(users)),
        })
    }

    /// The TLS acceptor, when the file has a `tls_server_config`.
    pub fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Whether the file asks for basic auth (has `basic_auth_users`).
    pub fn requires_auth(&self) -> bool {
        self.basic_auth.is_some()
    }

    /// Whether a request with this `Authorization` header may pass: always, when the file has
    /// no `basic_auth_users`. May block for a bcrypt check (tens of milliseconds); on a
    /// multi-threaded tokio runtime it moves the worker's other tasks elsewhere meanwhile.
    pub fn authorized(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(auth) = &self.basic_auth else {
            return true;
        };
        match authorization.and_then(|v| basic_credentials(v.as_bytes())) {
            Some((user, password)) => auth.check(&user, &password),
            None => false,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of TLS server settings")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<ClientAuth>,
    client_ca_file: Option<String>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    cipher_suites: Option<Vec<CipherSuiteName>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<Curve>>,
}

/// `client_auth_type`, with Go's `tls.ClientAuthType` names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl<'de> Deserialize<'de> for ClientAuth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(match name.as_str() {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => {
                return Err(de::Error::custom(format!(
                    "invalid client_auth_type \"{name}\": expected NoClientCert, \
                     RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert"
                )));
            }
        })
    }
}

/// `min_version`, `max_version`: the versions rustls speaks.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum TlsVersion {
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(de::Error::custom(format!(
                "TLS version {name} is not supported: rustls speaks only TLS12 and TLS13"
            ))),
            _ => Err(de::Error::custom(format!(
                "unknown TLS version \"{name}\": expected TLS12 or TLS13"
            ))),
        }
    }
}

/// The TLS 1.3 suites by their IANA names, as Go lists them in `tls.CipherSuites()`.
const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// One `cipher_suites` entry: a TLS 1.2 suite of the ring provider, or a TLS 1.3 name (a
/// no-op, as in Go).
struct CipherSuiteName(Option<SupportedCipherSuite>);

impl<'de> Deserialize<'de> for CipherSuiteName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let found = ring_provider::ALL_CIPHER_SUITES
            .iter()
            .find(|s| s.suite().as_str() == Some(name.as_str()));
        match found {
            Some(SupportedCipherSuite::Tls12(suite)) => {
                Ok(CipherSuiteName(Some(SupportedCipherSuite::Tls12(suite))))
            }
            Some(SupportedCipherSuite::Tls13(_)) => Ok(CipherSuiteName(None)),
            // Go's (IANA) names of the TLS 1.3 suites, which rustls spells TLS13_...
            None if TLS13_SUITE_NAMES.contains(&name.as_str()) => Ok(CipherSuiteName(None)),
            None => {
                let supported: Vec<&str> = ring_provider::ALL_CIPHER_SUITES
                    .iter()
                    .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
                    .filter_map(|s| s.suite().as_str())
                    .collect();
                Err(de::Error::custom(format!(
                    "unsupported cipher suite \"{name}\": expected one of {}",
                    supported.join(", ")
                )))
            }
        }
    }
}

/// One `curve_preferences` entry, with Go's `tls.CurveID` names.
struct Curve(&'static dyn SupportedKxGroup);

impl<'de> Deserialize<'de> for Curve {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "X25519" => Ok(Curve(kx_group::X25519)),
            "CurveP256" => Ok(Curve(kx_group::SECP256R1)),
            "CurveP384" => Ok(Curve(kx_group::SECP384R1)),
            "CurveP521" => Err(de::Error::custom(
                "curve CurveP521 is not supported by rustls: use X25519, CurveP256 or CurveP384",
            )),
            _ => Err(de::Error::custom(format!(
                "unknown curve \"{name}\": expected X25519, CurveP256 or CurveP384"
            ))),
        }
    }
}

/// `basic_auth_users`: user name to bcrypt hash, each hash checked while parsing.
struct Users(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsersVisitor;
        impl<'de> Visitor<'de> for UsersVisitor {
            type Value = Users;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of user names to bcrypt hashes")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Users, E> {
                Ok(Users(BTreeMap::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Users, A::Error> {
                let mut users = BTreeMap::new();
                while let Some(user) = map.next_key::<String>()? {
                    let hash: String = map.next_value()?;
                    if user.contains(':') {
                        return Err(de::Error::custom(format!(
                            "user name \"{user}\" contains ':', which basic auth cannot carry"
                        )));
                    }
                    check_bcrypt_hash(&hash)
                        .map_err(|why| de::Error::custom(format!("user \"{user}\": {why}")))?;
                    if users.insert(user.clone(), hash).is_some() {
                        return Err(de::Error::custom(format!(
                            "user \"{user}\" is listed twice"
                        )));
                    }
                }
                Ok(Users(users))
            }
        }
        deserializer.deserialize_map(UsersVisitor)
    }
}

/// Whether `hash` is a bcrypt hash Go's bcrypt accepts too (cost 4 to 31).
fn check_bcrypt_hash(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e| format!("not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\"`"))?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is outside the allowed range 4 to 31"
        ));
    }
    Ok(())
}

impl RawTls {
    /// Loads the certificates and keys and builds the acceptor; the error is the message.
    fn build(self, base: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
        let resolve = |field: &str, value: &Option<String>| -> Result<Option<PathBuf>, String> {
            match value.as_deref() {
                None | Some("") => Ok(None),
                Some(p) if p.trim().is_empty() => {
                    Err(format!("tls_server_config.{field} is blank"))
                }
                Some(p) => Ok(Some(base.join(p))),
            }
        };
        let cert_file = resolve("cert_file", &self.cert_file)?
            .ok_or("tls_server_config: cert_file is missing (the server certificate, PEM)")?;
        let key_file = resolve("key_file", &self.key_file)?
            .ok_or("tls_server_config: key_file is missing (the server's private key, PEM)")?;
        let client_ca_file = resolve("client_ca_file", &self.client_ca_file)?;

        let min = self.min_version.unwrap_or(TlsVersion::Tls12);
        let max = self.max_version.unwrap_or(TlsVersion::Tls13);
        if min > max {
            return Err(format!(
                "tls_server_config: min_version {min} is above max_version {max}"
            ));
        }
        let versions: Vec<&'static SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();

        let chain = load_certs(&cert_file, "cert_file")?;
        let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
            format!(
                "tls_server_config.key_file {}: no usable private key: {e}",
                key_file.display()
            )
        })?;

        let mut provider = ring_provider::default_provider();
        if let Some(names) = &self.cipher_suites
            && !names.is_empty()
        {
            let tls12: Vec<SupportedCipherSuite> = names.iter().filter_map(|n| n.0).collect();
            if min == TlsVersion::Tls12 {
                let signing_key = provider
                    .key_provider
                    .load_private_key(key.clone_key())
                    .map_err(|e| {
                        format!("tls_server_config.key_file {}: {e}", key_file.display())
                    })?;
                let algorithm = signing_key.algorithm();
                if !tls12
                    .iter()
                    .any(|s| s.usable_for_signature_algorithm(algorithm))
                {
                    return Err(format!(
                        "tls_server_config.cipher_suites: no TLS 1.2 suite works with the \
                         certificate's {algorithm:?} key, but min_version is TLS12: add one \
                         (e.g. TLS_ECDHE_{}_WITH_AES_128_GCM_SHA256) or set min_version: TLS13",
                        if algorithm == rustls::SignatureAlgorithm::RSA {
                            "RSA"
                        } else {
                            "ECDSA"
                        }
                    ));
                }
            }
            let mut suites: Vec<SupportedCipherSuite> = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .collect();
            for suite in tls12 {
                if !suites.iter().any(|s| s.suite() == suite.suite()) {
                    suites.push(suite);
                }
            }
            provider.cipher_suites = suites;
        }
        if let Some(curves) = &self.curve_preferences
            && !curves.is_empty()
        {
            let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
            for curve in curves {
                if !groups.iter().any(|g| g.name() == curve.0.name()) {
                    groups.push(curve.0);
                }
            }
            provider.kx_groups = groups;
        }
        let provider = Arc::new(provider);

        let client_auth = self.client_auth_type.unwrap_or(ClientAuth::NoClientCert);
        let roots = client_ca_file.as_deref().map(load_roots).transpose()?;
        let verifier: Arc<dyn ClientCertVerifier> = match (client_auth, roots) {
            (ClientAuth::NoClientCert, None) => WebPkiClientVerifier::no_client_auth(),
            (ClientAuth::NoClientCert, Some(_)) => {
                return Err(
                    "tls_server_config: client_ca_file is set but client_auth_type is \
                            NoClientCert: set client_auth_type (RequireAndVerifyClientCert to \
                            verify client certificates)"
                        .to_string(),
                );
            }
            (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, roots) => {
                Arc::new(AnyClientCert {
                    mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                    hints: roots.map(|r| r.subjects()).unwrap_or_default(),
                    algorithms: provider.signature_verification_algorithms,
                })
            }
            (
                ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert,
                None,
            ) => {
                return Err(format!(
                    "tls_server_config: client_auth_type {client_auth:?} needs client_ca_file \
                     (the CA certificates client certificates must chain to)"
                ));
            }
            (ClientAuth::VerifyClientCertIfGiven, Some(roots)) => {
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
            }
            (ClientAuth::RequireAndVerifyClientCert, Some(roots)) => {
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
            }
        };

        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls_server_config: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| {
                format!(
                    "tls_server_config: cert_file {} and key_file {} cannot be used together: {e}",
                    cert_file.display(),
                    key_file.display()
                )
            })?;
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Every certificate of the PEM file at `path`; at least one.
fn load_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = || format!("tls_server_config.{field} {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", what()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", what()));
    }
    Ok(certs)
}

/// The CA certificates of `client_ca_file`.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "client_ca_file")? {
        roots.add(cert).map_err(|e| {
            format!(
                "tls_server_config.client_ca_file {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// Asks for a client certificate (`mandatory`: requires one) and accepts any that parses, as
/// long as the client proves it holds the key: Go's `RequestClientCert` and
/// `RequireAnyClientCert`.
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for AnyClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyClientCert")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The users, and the cache of successful checks.
struct BasicAuth {
    /// User name to bcrypt hash; never empty.
    users: BTreeMap<String, String>,
    /// Random per process: cache keys are SHA-256(salt, user, password).
    salt: [u8; 32],
    /// Keys of (user, password) pairs that passed.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt runs one at a time, so a flood of bad passwords takes one core, not all.
    bcrypt: Mutex<()>,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let mut salt = [0; 32];
        // ring's system random; should it ever fail, a fixed salt still hides the plaintext.
        let _ = ring_provider::default_provider()
            .secure_random
            .fill(&mut salt);
        BasicAuth {
            users,
            salt,
            cache: Mutex::new(HashSet::new()),
            bcrypt: Mutex::new(()),
        }
    }

    fn cache_key(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let SupportedCipherSuite::Tls13(suite) =
            ring_provider::cipher_suite::TLS13_AES_128_GCM_SHA256
        else {
            unreachable!("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite");
        };
        let mut context = suite.common.hash_provider.start();
        context.update(&self.salt);
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user);
        context.update(password);
        let digest = context.finish();
        let mut key = [0; 32];
        key.copy_from_slice(&digest.as_ref()[..32]);
        key
    }

    fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let key = self.cache_key(user, password);
        if self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let known = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u));
        // An unknown user costs one bcrypt check too, against some user's hash, and fails.
        let hash = known.unwrap_or_else(|| self.users.values().next().expect("users not empty"));
        let matches = run_blocking(|| {
            let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(|e| e.into_inner());
            bcrypt::verify(password, hash).unwrap_or(false)
        });
        let passed = matches && known.is_some();
        if passed {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= AUTH_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        passed
    }
}

/// Runs `f`, which blocks; on a multi-threaded tokio runtime the worker's other tasks move to
/// another thread meanwhile.
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// User and password of an `Authorization: Basic` header value; `None` when it is not one.
fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.trim_ascii();
    let split = value.iter().position(|b| *b == b' ')?;
    let (scheme, encoded) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = decode_base64(encoded.trim_ascii())?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Standard base64 (RFC 4648), padding optional.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let data = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let padded = data.len() != text.len();
    if (padded && !text.len().is_multiple_of(4)) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A CA that issues server and client certificates.
    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate and its key, PEM.
    struct Leaf {
        cert: String,
        key: String,
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            Ca {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, "leaf");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }
    }

    fn self_signed_client() -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["rogue".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Leaf {
            cert: params.self_signed(&key).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }

    /// A temp dir with server.crt/.key (from `ca`), client-ca.crt, and web.yml written on demand.
    struct Setup {
        dir: tempfile::TempDir,
        ca: Ca,
        client_ca: Ca,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let ca = Ca::new("server CA");
            let client_ca = Ca::new("client CA");
            let server = ca.issue(
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            std::fs::write(dir.path().join("server.crt"), &server.cert).unwrap();
            std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
            std::fs::write(dir.path().join("client-ca.crt"), &client_ca.pem).unwrap();
            Setup { dir, ca, client_ca }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Writes `text` as web.yml and loads it.
        fn load(&self, text: &str) -> Result<WebConfig, WebConfigError> {
            let path = self.path("web.yml");
            std::fs::write(&path, text).unwrap();
            WebConfig::from_file(&path)
        }

        /// The message of loading `text`, which must fail; it starts with the file's path.
        fn error(&self, text: &str) -> String {
            let message = self.load(text).unwrap_err().to_string();
            let path = self.path("web.yml").display().to_string();
            assert!(message.starts_with(&path), "{message}");
            message[path.len()..].to_string()
        }

        fn tls(&self, extra: &str) -> String {
            format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}")
        }

        fn client(&self, leaf: Option<&Leaf>) -> ClientConfig {
            client_config(&self.ca.pem, leaf, None, None, None)
        }
    }

    fn client_config(
        ca_pem: &str,
        leaf: Option<&Leaf>,
        versions: Option<&[&'static SupportedProtocolVersion]>,
        suites: Option<Vec<SupportedCipherSuite>>,
        groups: Option<Vec<&'static dyn SupportedKxGroup>>,
    ) -> ClientConfig {
        let mut provider = ring_provider::default_provider();
        if let Some(suites) = suites {
            provider.cipher_suites = suites;
        }
        if let Some(groups) = groups {
            provider.kx_groups = groups;
        }
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions.unwrap_or(rustls::ALL_VERSIONS))
            .unwrap()
            .with_root_certificates(roots);
        match leaf {
            None => builder.with_no_client_auth(),
            Some(leaf) => {
                let chain = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        }
    }

    /// A handshake and one exchange of bytes between `config`'s acceptor and `client`, over an
    /// in-memory pipe: Ok when both sides got through.
    fn exchange(config: &WebConfig, client: ClientConfig) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let acceptor = config.tls().expect("TLS is configured").clone();
        runtime.block_on(async move {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let server = async move {
                let mut stream = acceptor
                    .accept(server_io)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut buf = [0; 4];
                stream
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                stream.write_all(b"pong").await.map_err(|e| e.to_string())?;
                stream.flush().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            };
            let client = async move {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let mut stream = connector
                    .connect(name, client_io)
                    .await
                    .map_err(|e| e.to_string())?;
                stream.write_all(b"ping").await.map_err(|e| e.to_string())?;
                stream.flush().await.map_err(|e| e.to_string())?;
                let mut buf = [0; 4];
                stream
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            };
            let exchange = async { tokio::join!(server, client) };
            match tokio::time::timeout(Duration::from_secs(10), exchange).await {
                Err(_) => Err("timed out".to_string()),
                Ok((Ok(()), Ok(()))) => Ok(()),
                Ok((server, client)) => Err(format!("server: {server:?}, client: {client:?}")),
            }
        })
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let raw = format!("{user}:{password}");
        HeaderValue::from_str(&format!("Basic {}", encode_base64(raw.as_bytes()))).unwrap()
    }

    fn encode_base64(data: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
        out
    }

    fn users_file(cost: u32) -> String {
        let alice = bcrypt::hash("wonderland", cost).unwrap();
        let bob = bcrypt::hash_with_result("builder", cost)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        format!("basic_auth_users:\n  alice: {alice}\n  bob: '{bob}'\n")
    }

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
    fn basic_auth_checks_users_and_passwords() {
        let setup = Setup::new();
        let config = setup.load(&users_file(4)).unwrap();
        assert!(config.tls().is_none());
        assert!(config.requires_auth());
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        assert!(
            config.authorized(Some(&basic("bob", "builder"))),
            "$2y$ hashes work"
        );
        assert!(
            config.authorized(Some(&basic("bob", "builder"))),
            "and again, cached"
        );
        assert!(!config.authorized(Some(&basic("alice", "builder"))));
        assert!(!config.authorized(Some(&basic("alice", ""))));
        assert!(!config.authorized(Some(&basic("carol", "wonderland"))));
        assert!(!config.authorized(Some(&basic("", ""))));
        assert!(!config.authorized(None));
        let raw = encode_base64(b"alice:wonderland");
        assert!(config.authorized(Some(
            &HeaderValue::from_str(&format!("basic  {raw}")).unwrap()
        )));
        for bad in [
            format!("Bearer {raw}"),
            "Basic".to_string(),
            "Basic !!!!".to_string(),
            format!("Basic {}", encode_base64(b"alicewonderland")),
            format!("Basic {}", &raw[..raw.len() - 1]),
        ] {
            assert!(
                !config.authorized(Some(&HeaderValue::from_str(&bad).unwrap())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_password_may_contain_colons_and_non_ascii() {
        let setup = Setup::new();
        let hash = bcrypt::hash("a:b:ç", 4).unwrap();
        let config = setup
            .load(&format!("basic_auth_users:\n  zoë: {hash}\n"))
            .unwrap();
        assert!(config.authorized(Some(&basic("zoë", "a:b:ç"))));
        assert!(!config.authorized(Some(&basic("zoë", "a:b"))));
    }

    #[test]
    fn only_successful_checks_are_cached_and_never_in_plaintext() {
        let setup = Setup::new();
        let config = setup.load(&users_file(4)).unwrap();
        let auth = config.basic_auth.as_ref().unwrap();
        let cached = || auth.cache.lock().unwrap().clone();
        assert!(!config.authorized(Some(&basic("alice", "wrong"))));
        assert!(!config.authorized(Some(&basic("carol", "wonderland"))));
        assert!(cached().is_empty(), "failures are not cached");
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        let keys = cached();
        assert_eq!(keys.len(), 1);
        let key = keys.iter().next().unwrap();
        assert_eq!(*key, auth.cache_key(b"alice", b"wonderland"));
        assert_ne!(
            auth.cache_key(b"alice", b"wonderland"),
            auth.cache_key(b"alicew", b"onderland")
        );
        // A cached pair passes without bcrypt: even with alice's hash swapped for garbage.
        let mut config = config;
        let auth = config.basic_auth.as_mut().unwrap();
        auth.users.insert("alice".into(), "garbage".into());
        assert!(config.authorized(Some(&basic("alice", "wonderland"))));
        assert!(!config.authorized(Some(&basic("alice", "wrong"))));
    }

    #[test]
    fn unknown_users_cost_a_bcrypt_check_too() {
        let setup = Setup::new();
        let config = setup.load(&users_file(8)).unwrap();
        let time = |user: &str| {
            (0..3)
                .map(|_| {
                    let start = Instant::now();
                    assert!(!config.authorized(Some(&basic(user, "wrong"))));
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let known = time("alice");
        let unknown = time("mallory");
        assert!(
            unknown * 2 > known,
            "an unknown user ({unknown:?}) is much faster than a wrong password ({known:?})"
        );
    }

    #[test]
    fn tls_paths_are_relative_to_the_web_config_file() {
        let setup = Setup::new();
        let config = setup.load(&setup.tls("")).unwrap();
        assert!(config.tls().is_some());
        assert!(!config.requires_auth());
        exchange(&config, setup.client(None)).unwrap();
        // An absolute path works too.
        let absolute = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: server.key\n",
            setup.path("server.crt").display()
        );
        assert!(setup.load(&absolute).unwrap().tls().is_some());
    }

    #[test]
    fn a_client_that_does_not_trust_the_ca_fails() {
        let setup = Setup::new();
        let config = setup.load(&setup.tls("")).unwrap();
        let other = Ca::new("other CA");
        assert!(exchange(&config, client_config(&other.pem, None, None, None, None)).is_err());
    }

    #[test]
    fn client_auth_types_map_to_the_right_verification() {
        let setup = Setup::new();
        let signed = setup
            .client_ca
            .issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
        let rogue = self_signed_client();
        // (client_auth_type, with client_ca_file, no cert, CA-signed cert, self-signed cert)
        let cases = [
            ("NoClientCert", false, true, true, true),
            ("RequestClientCert", false, true, true, true),
            ("RequireAnyClientCert", false, false, true, true),
            ("RequireClientCert", true, false, true, true),
            ("VerifyClientCertIfGiven", true, true, true, false),
            ("RequireAndVerifyClientCert", true, false, true, false),
        ];
        for (kind, with_ca, none_ok, signed_ok, rogue_ok) in cases {
            let ca = if with_ca {
                "  client_ca_file: client-ca.crt\n"
            } else {
                ""
            };
            let text = setup.tls(&format!("  client_auth_type: {kind}\n{ca}"));
            let config = setup.load(&text).unwrap();
            for (leaf, ok, what) in [
                (None, none_ok, "no cert"),
                (Some(&signed), signed_ok, "CA-signed cert"),
                (Some(&rogue), rogue_ok, "self-signed cert"),
            ] {
                let result = exchange(&config, setup.client(leaf));
                assert_eq!(result.is_ok(), ok, "{kind} with {what}: {result:?}");
            }
        }
    }

    #[test]
    fn versions_suites_and_curves_are_enforced() {
        let setup = Setup::new();
        let tls12_only: &[&'static SupportedProtocolVersion] = &[&rustls::version::TLS12];
        let tls13_only: &[&'static SupportedProtocolVersion] = &[&rustls::version::TLS13];
        let with =
            |versions, suites, groups| client_config(&setup.ca.pem, None, versions, suites, groups);
        let config = setup.load(&setup.tls("  min_version: TLS13\n")).unwrap();
        assert!(exchange(&config, with(Some(tls12_only), None, None)).is_err());
        exchange(&config, with(Some(tls13_only), None, None)).unwrap();

        let config = setup.load(&setup.tls("  max_version: TLS12\n")).unwrap();
        assert!(exchange(&config, with(Some(tls13_only), None, None)).is_err());
        exchange(&config, with(Some(tls12_only), None, None)).unwrap();

        let text = setup.tls(
            "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n",
        );
        let config = setup.load(&text).unwrap();
        let aes128 = vec![ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
        let aes256 = vec![ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384];
        assert!(exchange(&config, with(Some(tls12_only), Some(aes128), None)).is_err());
        exchange(&config, with(Some(tls12_only), Some(aes256), None)).unwrap();
        // TLS 1.3 suites stay on whatever cipher_suites says, as in Go.
        let chacha13 = vec![ring_provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256];
        exchange(&config, with(Some(tls13_only), Some(chacha13), None)).unwrap();

        let config = setup
            .load(&setup.tls("  curve_preferences: [CurveP384]\n"))
            .unwrap();
        assert!(exchange(&config, with(None, None, Some(vec![kx_group::X25519]))).is_err());
        exchange(&config, with(None, None, Some(vec![kx_group::SECP384R1]))).unwrap();

        let text = setup.tls(
            "  prefer_server_cipher_suites: false\n  min_version: TLS12\n  max_version: TLS13\n  \
             cipher_suites: []\n  curve_preferences: [X25519, CurveP256]\n",
        );
        exchange(&setup.load(&text).unwrap(), setup.client(None)).unwrap();
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

    #[test]
    fn base64_decoding() {
        assert_eq!(decode_base64(b"YWxpY2U6cHc=").unwrap(), b"alice:pw");
        assert_eq!(decode_base64(b"YWxpY2U6cHc").unwrap(), b"alice:pw");
        assert_eq!(decode_base64(b"YQ==").unwrap(), b"a");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert_eq!(decode_base64(b"YQ=").map(|_| ()), None);
        assert_eq!(decode_base64(b"Y").map(|_| ()), None);
        assert_eq!(decode_base64(b"YW=x").map(|_| ()), None);
        for data in [&b""[..], b"a", b"ab", b"abc", b"\xff\x00:\xfe"] {
            assert_eq!(decode_base64(encode_base64(data).as_bytes()).unwrap(), data);
        }
    }
}
