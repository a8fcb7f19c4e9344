//! TLS of the web config (`tls_server_config`): its fields, and the rustls server config built
//! from them: the certificate and key, client-certificate verification, versions, cipher suites
//! and curves.
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
use serde::de::{self, Deserializer};

/// `tls_server_config`, as written; [`RawTls::build`] checks and loads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of TLS server settings")]
pub(super) struct RawTls {
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

impl RawTls {
    /// Loads the certificates and keys and builds the acceptor; the error is the message.
    pub(super) fn build(self, base: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::web::security::WebConfig;
    use crate::web::security::testing::{Ca, Leaf, Setup};

    fn self_signed_client() -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["rogue".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Leaf {
            cert: params.self_signed(&key).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }

    impl Setup {
        /// A client that trusts the server's CA, with `leaf` as its certificate.
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
}
