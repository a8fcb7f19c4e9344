//! The service check keys of a target and of `[defaults]`: `service`, the `tls` table and
//! `query`, as serde reads them and validated into a [`ServiceCheck`].
//!
//! Everything that can be wrong is found at load: a service word, a server name, a CA file
//! that does not exist or holds no usable certificate, hex that is not hex, a regex that does
//! not compile or is too large. Each key is inherited from `[defaults]` on its own, like the
//! timing keys.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{Invalid, invalid};
use crate::domain::Service;

/// The most steps a `query` may have.
pub const MAX_QUERY_STEPS: usize = 32;

/// The most memory one compiled `expect` regex may take (the `regex` crate's size limit).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What `service` says must speak on a target's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceExpect {
    /// `"auto"`: identify whatever speaks; nothing is expected.
    Auto,
    /// `"tls"`: any service, over TLS (implicit, or after the service's STARTTLS).
    Tls,
    /// This service, over TLS or not.
    Named(Service),
}

impl ServiceExpect {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceExpect::Auto => "auto",
            ServiceExpect::Tls => "tls",
            ServiceExpect::Named(service) => service.as_str(),
        }
    }
}

/// The `tls` table: how a TLS check names the server and verifies its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// SNI and the name the chain is verified for. A target's is resolved: its own, else
    /// `[defaults]`', else the host when it is a DNS name; `None`: no SNI, and the chain is
    /// verified for the address probed.
    pub server_name: Option<String>,
    pub roots: Roots,
    /// Do not verify the chain (`port_tls_cert_verified` is not written).
    pub insecure_skip_verify: bool,
}

impl TlsSettings {
    /// Without a server name of its own, a DNS name `host` is the server name.
    fn name_host(&mut self, host: &str) {
        if self.server_name.is_none() && host.parse::<std::net::IpAddr>().is_err() {
            self.server_name = Some(host.to_string());
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            server_name: None,
            roots: Roots::System,
            insecure_skip_verify: false,
        }
    }
}

/// The certificates a chain is verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The system's roots (read once, when first needed).
    System,
    /// The CA certificates of `ca_file`, read at load.
    File(Arc<CaFile>),
}

/// A `ca_file`, read and made into a verifier at load.
pub struct CaFile {
    pub path: PathBuf,
    pub verifier: Arc<WebPkiServerVerifier>,
    /// SHA-256 of the certificates, so that a reload can tell a changed file.
    digest: [u8; 32],
}

impl PartialEq for CaFile {
    fn eq(&self, other: &CaFile) -> bool {
        self.path == other.path && self.digest == other.digest
    }
}

impl Eq for CaFile {}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A `query`: send/expect steps for a protocol the exporter does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub steps: Vec<Step>,
}

/// One step of a [`Query`]: bytes to send, then a reply to wait for (either may be absent).
#[derive(Clone, Debug)]
pub struct Step {
    pub send: Option<Vec<u8>>,
    /// Matched against the bytes read since the previous step's match.
    pub expect: Option<regex::bytes::Regex>,
}

impl PartialEq for Step {
    fn eq(&self, other: &Step) -> bool {
        self.send == other.send
            && self.expect.as_ref().map(regex::bytes::Regex::as_str)
                == other.expect.as_ref().map(regex::bytes::Regex::as_str)
    }
}

impl Eq for Step {}

/// A target's service check: present when it (or `[defaults]`) sets `service` or `query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCheck {
    /// `None` when only a `query` is given.
    pub service: Option<ServiceExpect>,
    /// When given, the query is the check.
    pub query: Option<Arc<Query>>,
    pub tls: TlsSettings,
}

/// The service check a `/probe` request asks for: `service=` and the TLS options, already
/// read by the same rules as the config's keys ([`ServiceExpect::parse`],
/// [`parse_server_name`]). A request never names a file: the roots are `[defaults]`'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedCheck {
    pub service: ServiceExpect,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

impl ServiceDefaults {
    /// The check of a `/probe` of `host`: the request's keys over `[defaults]`' `tls` table,
    /// as a target's are. `[defaults]`' `query` does not apply: the request states the service.
    pub fn for_request(&self, host: &str, requested: &RequestedCheck) -> ServiceCheck {
        let mut tls = TlsSettings {
            server_name: requested
                .server_name
                .clone()
                .or_else(|| self.tls.server_name.clone()),
            roots: self.tls.roots.clone(),
            insecure_skip_verify: requested
                .insecure_skip_verify
                .unwrap_or(self.tls.insecure_skip_verify),
        };
        tls.name_host(host);
        ServiceCheck {
            service: Some(requested.service),
            query: None,
            tls,
        }
    }
}

/// What `[defaults]` sets for the service check, key by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDefaults {
    pub service: Option<ServiceExpect>,
    pub query: Option<Arc<Query>>,
    /// `server_name` here is `[defaults]`' own, not resolved for any host.
    pub tls: TlsSettings,
}

/// The `tls` table as serde reads it.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    server_name: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    insecure_skip_verify: Option<bool>,
}

/// One `query` step as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    send: Option<Spanned<String>>,
    send_hex: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
}

pub(super) type RawQuery = Spanned<Vec<Spanned<RawStep>>>;

/// The service keys one table (`[defaults]` or a target) sets.
pub(super) struct ServiceKeys<'a> {
    pub(super) service: &'a Option<Spanned<String>>,
    pub(super) tls: &'a Option<RawTls>,
    pub(super) query: &'a Option<RawQuery>,
}

impl ServiceKeys<'_> {
    /// `[defaults]`' keys over the built-in ones; `base` is where a relative `ca_file` is.
    pub(super) fn validate_defaults(
        &self,
        base: Option<&Path>,
    ) -> Result<ServiceDefaults, Invalid> {
        self.over(&ServiceDefaults::default(), base)
    }

    /// A target's keys over `defaults`, for `host`: its check, or `None` for connect only.
    pub(super) fn validate_target(
        &self,
        defaults: &ServiceDefaults,
        host: &str,
        base: Option<&Path>,
    ) -> Result<Option<Arc<ServiceCheck>>, Invalid> {
        let ServiceDefaults {
            service,
            query,
            mut tls,
        } = self.over(defaults, base)?;
        if service.is_none() && query.is_none() {
            return Ok(None);
        }
        tls.name_host(host);
        Ok(Some(Arc::new(ServiceCheck {
            service,
            query,
            tls,
        })))
    }

    /// What these keys set, each over the one `inherited`.
    fn over(
        &self,
        inherited: &ServiceDefaults,
        base: Option<&Path>,
    ) -> Result<ServiceDefaults, Invalid> {
        let service = match self.service {
            Some(word) => Some(validate_service(word)?),
            None => inherited.service,
        };
        let query = match self.query {
            Some(query) => Some(Arc::new(validate_query(query)?)),
            None => inherited.query.clone(),
        };
        let raw = self.tls.as_ref();
        let field =
            |pick: fn(&RawTls) -> &Option<Spanned<String>>| raw.and_then(|t| pick(t).as_ref());
        let server_name = match field(|t| &t.server_name) {
            Some(name) => Some(validate_server_name(name)?),
            None => inherited.tls.server_name.clone(),
        };
        let roots = match field(|t| &t.ca_file) {
            Some(path) => Roots::File(Arc::new(load_ca_file(path, base)?)),
            None => inherited.tls.roots.clone(),
        };
        let insecure_skip_verify = raw
            .and_then(|t| t.insecure_skip_verify)
            .unwrap_or(inherited.tls.insecure_skip_verify);
        Ok(ServiceDefaults {
            service,
            query,
            tls: TlsSettings {
                server_name,
                roots,
                insecure_skip_verify,
            },
        })
    }
}

fn validate_service(word: &Spanned<String>) -> Result<ServiceExpect, Invalid> {
    ServiceExpect::parse(word.get_ref()).or_else(|why| invalid(word.span(), why))
}

impl ServiceExpect {
    /// Reads a `service` word: `auto`, `tls` or a service name; the error says what is valid.
    /// The config's `service` key and `/probe`'s `service=` alike.
    pub fn parse(word: &str) -> Result<ServiceExpect, String> {
        match word {
            "auto" => Ok(ServiceExpect::Auto),
            "tls" => Ok(ServiceExpect::Tls),
            name => match name.parse::<Service>() {
                Ok(service) => Ok(ServiceExpect::Named(service)),
                Err(()) => {
                    let names: Vec<&str> = Service::NAMED.iter().map(|s| s.as_str()).collect();
                    Err(format!(
                        "invalid service {name:?}: expected \"auto\", \"tls\" or a service name: {}",
                        names.join(", ")
                    ))
                }
            },
        }
    }
}

fn validate_server_name(name: &Spanned<String>) -> Result<String, Invalid> {
    parse_server_name(name.get_ref(), "tls.server_name").or_else(|why| invalid(name.span(), why))
}

/// Reads a TLS server name (`key` names it in the error): a DNS name or an IP address (in
/// brackets or not). The config's `tls.server_name` and `/probe`'s `tls_server_name=` alike.
pub fn parse_server_name(text: &str, key: &str) -> Result<String, String> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    match ServerName::try_from(bare) {
        Ok(_) if !bare.is_empty() => Ok(bare.to_string()),
        _ => Err(format!(
            "invalid {key} {text:?}: expected a DNS name or an IP address"
        )),
    }
}

/// Reads the PEM bundle at `path` (relative to `base`, the config file's folder): at least one
/// certificate, each a usable trust anchor.
fn load_ca_file(path: &Spanned<String>, base: Option<&Path>) -> Result<CaFile, Invalid> {
    let given = Path::new(path.get_ref());
    let resolved = match base {
        Some(base) if given.is_relative() => base.join(given),
        _ => given.to_path_buf(),
    };
    let fail = |why: String| {
        invalid(
            path.span(),
            format!("tls.ca_file {:?}: {why}", path.get_ref()),
        )
    };
    let unreadable = |error: pem::Error| match error {
        pem::Error::Io(error) => format!("cannot read: {error}"),
        other => format!("not a PEM bundle: {other}"),
    };
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&resolved) {
        Ok(certs) => match certs.collect() {
            Ok(certs) => certs,
            Err(error) => return fail(unreadable(error)),
        },
        Err(error) => return fail(unreadable(error)),
    };
    if certs.is_empty() {
        return fail("no PEM certificate in it".to_string());
    }
    let mut roots = RootCertStore::empty();
    let mut digest = Sha256::new();
    for cert in certs {
        digest.update(&cert);
        if let Err(error) = roots.add(cert) {
            return fail(format!("not a usable CA certificate: {error}"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build() {
            Ok(verifier) => verifier,
            Err(error) => return fail(format!("not usable: {error}")),
        };
    Ok(CaFile {
        path: resolved,
        verifier,
        digest: digest.finalize().into(),
    })
}

/// A UDP target's `query`: one step, the datagram sent instead of the port's own request
/// (`send` or `send_hex`; neither: an empty datagram) and the regex its reply must match.
pub(super) fn validate_udp_query(query: &RawQuery) -> Result<ServiceCheck, Invalid> {
    let steps = query.get_ref().len();
    if steps > 1 {
        return invalid(
            query.span(),
            format!(
                "query has {steps} steps: a UDP query is one step (the datagram sent, the reply expected)"
            ),
        );
    }
    Ok(ServiceCheck {
        service: None,
        query: Some(Arc::new(validate_query(query)?)),
        tls: TlsSettings::default(),
    })
}

fn validate_query(query: &RawQuery) -> Result<Query, Invalid> {
    let raw = query.get_ref();
    if raw.is_empty() {
        return invalid(query.span(), "query must list at least one step");
    }
    if raw.len() > MAX_QUERY_STEPS {
        return invalid(
            query.span(),
            format!("query has {} steps: at most {MAX_QUERY_STEPS}", raw.len()),
        );
    }
    raw.iter()
        .map(validate_step)
        .collect::<Result<_, _>>()
        .map(|steps| Query { steps })
}

fn validate_step(step: &Spanned<RawStep>) -> Result<Step, Invalid> {
    let raw = step.get_ref();
    let send = match (&raw.send, &raw.send_hex) {
        (Some(_), Some(hex)) => {
            return invalid(hex.span(), "a query step takes send or send_hex, not both");
        }
        (Some(text), None) => Some(text.get_ref().as_bytes().to_vec()),
        (None, Some(hex)) => Some(parse_hex(hex)?),
        (None, None) => None,
    };
    let expect = match &raw.expect {
        Some(pattern) => Some(
            regex::bytes::RegexBuilder::new(pattern.get_ref())
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .or_else(|error| {
                    invalid(
                        pattern.span(),
                        format!(
                            "invalid expect regex {:?}: {}",
                            pattern.get_ref(),
                            regex_message(&error)
                        ),
                    )
                })?,
        ),
        None => None,
    };
    if send.as_ref().is_none_or(Vec::is_empty) && expect.is_none() {
        return invalid(step.span(), "a query step needs send, send_hex or expect");
    }
    Ok(Step { send, expect })
}

/// The regex crate's message in one line: a syntax error's own line ("error: ...").
fn regex_message(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
}

/// `send_hex`: pairs of hex digits, white space between them allowed.
fn parse_hex(hex: &Spanned<String>) -> Result<Vec<u8>, Invalid> {
    let digits: Vec<u8> = hex
        .get_ref()
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let value = |d: u8| (d as char).to_digit(16);
    let bytes: Option<Vec<u8>> = digits
        .len()
        .is_multiple_of(2)
        .then(|| {
            digits
                .chunks(2)
                .map(|pair| Some((value(pair[0])? * 16 + value(pair[1])?) as u8))
                .collect()
        })
        .flatten();
    match bytes {
        Some(bytes) => Ok(bytes),
        None => invalid(
            hex.span(),
            format!(
                "invalid send_hex {:?}: expected pairs of hex digits such as \"0000000804d2162f\"",
                hex.get_ref()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn error(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    /// A CA certificate in a PEM file of a fresh folder.
    fn ca_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        dir
    }

    #[test]
    fn no_service_or_query_is_connect_only_whatever_the_tls_table_says() {
        let text = "[defaults]\ntls = { insecure_skip_verify = true }\n[[targets]]\nhost = \"h\"\nports = [1]\n";
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.targets[0].service, None);
        assert!(config.defaults.service.tls.insecure_skip_verify);
        assert_eq!(config.defaults.service.service, None);
    }

    #[test]
    fn each_key_is_inherited_on_its_own_and_sni_defaults_to_a_host_name() {
        let dir = ca_folder();
        let ca = dir.path().join("ca.pem");
        // [defaults] sets every key; "own" overrides some of them in an inline tls table.
        let defaults = format!(
            "[defaults]\nservice = \"auto\"\nquery = [{{ expect = \"^OK\" }}]\n\
             tls = {{ ca_file = {ca:?}, server_name = \"default.example\" }}\n"
        );
        let targets = [
            r#"{ name = "inherits", host = "db.example", ports = [1] }"#,
            r#"{ name = "own", host = "10.0.0.1", ports = [1], service = "ssh", tls = { server_name = "[::1]", insecure_skip_verify = true } }"#,
        ];
        let text = format!("targets = [{}]\n{defaults}", targets.join(", "));
        let config = Config::parse(&text, "t").unwrap();
        let [inherits, own] = &config.targets[..] else {
            panic!("two targets")
        };
        let inherits = inherits.service.as_deref().unwrap();
        assert_eq!(inherits.service, Some(ServiceExpect::Auto));
        assert_eq!(inherits.query.as_ref().unwrap().steps.len(), 1);
        assert_eq!(inherits.tls.server_name.as_deref(), Some("default.example"));
        assert!(matches!(&inherits.tls.roots, Roots::File(file) if file.path == ca));
        let own = own.service.as_deref().unwrap();
        assert_eq!(own.service, Some(ServiceExpect::Named(Service::Ssh)));
        assert_eq!(own.tls.server_name.as_deref(), Some("::1"));
        assert!(own.tls.insecure_skip_verify);
        // The CA file still comes from [defaults].
        assert_eq!(own.tls.roots, inherits.tls.roots);

        let plain = "[[targets]]\nhost = \"db.example\"\nports = [1]\nservice = \"tls\"\n[[targets]]\nhost = \"::1\"\nports = [1]\nservice = \"tls\"\n";
        let config = Config::parse(plain, "t").unwrap();
        let names: Vec<Option<&str>> = config
            .targets
            .iter()
            .map(|t| t.service.as_deref().unwrap().tls.server_name.as_deref())
            .collect();
        assert_eq!(names, [Some("db.example"), None]);
        assert_eq!(
            config.targets[0].service.as_deref().unwrap().tls.roots,
            Roots::System
        );
    }

    #[test]
    fn a_relative_ca_file_is_found_beside_the_config_file() {
        let dir = ca_folder();
        let path = dir.path().join("ports.toml");
        std::fs::write(
            &path,
            "[[targets]]\nhost = \"h\"\nports = [1]\nservice = \"tls\"\ntls = { ca_file = \"ca.pem\" }\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        let check = config.targets[0].service.as_deref().unwrap();
        assert!(
            matches!(&check.tls.roots, Roots::File(file) if file.path == dir.path().join("ca.pem"))
        );
        // The same file read again is the same roots: a reload sees no change.
        let again = Config::from_file(&path).unwrap();
        assert_eq!(again.targets, config.targets);
    }

    #[test]
    fn query_steps_are_bytes_and_bounded_regexes() {
        let text = "[[targets]]\nhost = \"h\"\nports = [1]\nquery = [{ send_hex = \"00 00 00 08 04D2162F\" }, { send = \"a\\r\\n\", expect = \"^(?-u)\\\\xffOK\" }]\n";
        let config = Config::parse(text, "t").unwrap();
        let check = config.targets[0].service.as_deref().unwrap();
        assert_eq!(check.service, None);
        let steps = &check.query.as_ref().unwrap().steps;
        assert_eq!(
            steps[0].send.as_deref(),
            Some(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..])
        );
        assert_eq!(steps[1].send.as_deref(), Some(&b"a\r\n"[..]));
        assert!(steps[1].expect.as_ref().unwrap().is_match(b"\xffOK"));

        let target = "[[targets]]\nhost = \"h\"\nports = [1]\n";
        let huge = format!("{target}query = [{{ expect = \"\\\\w{{100}}\" }}]\n");
        assert!(
            error(&huge).starts_with("t:4:21: invalid expect regex"),
            "{}",
            error(&huge)
        );
        let many = format!(
            "{target}query = [{}]\n",
            vec!["{ send = \"x\" }"; 33].join(", ")
        );
        assert_eq!(error(&many), "t:4:9: query has 33 steps: at most 32");
        let nothing = format!("{target}query = [{{ send = \"\" }}]\n");
        assert_eq!(
            error(&nothing),
            "t:4:10: a query step needs send, send_hex or expect"
        );
    }
}
