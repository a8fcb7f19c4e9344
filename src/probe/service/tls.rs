//! TLS as a client: the handshake, and what it tells about the server (version, the chain it
//! sent, the earliest notAfter in it, whether it verifies).
//!
//! The handshake accepts any certificate (it still checks the handshake's signatures), so
//! that an expired, self-signed or misnamed certificate still yields its expiry and the
//! service behind it; the chain is then verified on its own, against the roots and for the
//! server name at the current time, for `port_tls_cert_verified`. Sessions are not resumed:
//! every handshake shows the chain the server sends now.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::client::TlsStream;

use super::TlsFinding;
use super::io::Counted;
use crate::config::service::{Roots, TlsSettings};
use crate::domain::Reason;

/// A TLS connection over a counted stream.
pub type Tls<S> = TlsStream<Counted<S>>;

/// A handshake that did not succeed: why, and the first bytes the server sent (an SSH banner
/// or an HTTP error tell what answered instead).
#[derive(Debug)]
pub struct Failed {
    pub reason: Reason,
    pub first: Vec<u8>,
}

/// Shakes hands over `stream` as `settings` say, by `until`.
pub async fn handshake<S>(
    stream: S,
    settings: &TlsSettings,
    addr: SocketAddr,
    until: Instant,
) -> Result<(Tls<S>, TlsFinding), Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = server_name(settings, addr);
    let connector = tokio_rustls::TlsConnector::from(client_config().clone());
    let connecting = connector
        .connect(name.clone(), Counted::new(stream))
        .into_fallible();
    let tls = match timeout_at(until, connecting).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((error, counted))) => {
            let first = counted.first().to_vec();
            let reason = if counted.over_limit() {
                Reason::ByteLimit
            } else if first.is_empty() && is_closed(&error) {
                Reason::ClosedByPeer
            } else {
                Reason::TlsHandshakeFailed
            };
            return Err(Failed { reason, first });
        }
        Err(_) => {
            return Err(Failed {
                reason: Reason::Timeout,
                first: Vec::new(),
            });
        }
    };
    let (_, connection) = tls.get_ref();
    let version = match connection.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLS 1.3",
        _ => "TLS 1.2",
    };
    let chain: Vec<CertificateDer<'static>> =
        connection.peer_certificates().unwrap_or_default().to_vec();
    let verified = match settings.insecure_skip_verify {
        true => None,
        false => Some(verifies(&chain, &name, &settings.roots).await),
    };
    let finding = TlsFinding {
        version,
        expiry: earliest_not_after(&chain),
        verified,
    };
    Ok((tls, finding))
}

fn is_closed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// SNI and the name verified: the configured one, else the address (no SNI is sent for an
/// address).
fn server_name(settings: &TlsSettings, addr: SocketAddr) -> ServerName<'static> {
    settings
        .server_name
        .as_deref()
        .and_then(|name| ServerName::try_from(name.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// The earliest notAfter of the certificates in `chain` that parse, as a Unix time.
pub fn earliest_not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

/// Whether `chain` verifies for `name` against `roots`, now.
async fn verifies(chain: &[CertificateDer<'static>], name: &ServerName<'_>, roots: &Roots) -> bool {
    let verifier = match roots {
        Roots::File(ca) => Some(ca.verifier.clone()),
        Roots::System => system_verifier().await,
    };
    let (Some(verifier), Some((end_entity, intermediates))) = (verifier, chain.split_first())
    else {
        return false;
    };
    verifier
        .verify_server_cert(end_entity, intermediates, name, &[], UnixTime::now())
        .is_ok()
}

/// The system's roots, read on first use (off the runtime's threads); `None` when there are
/// none, so that nothing verifies.
async fn system_verifier() -> Option<Arc<WebPkiServerVerifier>> {
    static SYSTEM: tokio::sync::OnceCell<Option<Arc<WebPkiServerVerifier>>> =
        tokio::sync::OnceCell::const_new();
    SYSTEM
        .get_or_init(|| async {
            let loaded = tokio::task::spawn_blocking(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    tracing::warn!(
                        errors = ?found.errors,
                        "no system root certificates: no TLS chain verifies without a ca_file"
                    );
                    return None;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .ok()
            });
            loaded.await.ok().flatten()
        })
        .await
        .clone()
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The one client config: TLS 1.2 and 1.3, any certificate, no resumption.
fn client_config() -> &'static Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = provider();
        let algorithms = provider.signature_verification_algorithms;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert { algorithms }))
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    })
}

/// Accepts any server certificate, and checks that the server holds its key.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
