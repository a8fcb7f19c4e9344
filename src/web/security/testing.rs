//! Test fixtures of the web config: CAs that issue certificates, a directory holding a
//! server certificate and key, a client CA, and the web config file under test, and a
//! blocking form of the credentials check.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use hyper::header::HeaderValue;

use super::basic_auth::BasicAuth;
use super::{Verdict, WebConfig, WebConfigError};

impl WebConfig {
    /// Whether [`WebConfig::authorize`] passes the header, run to its end on a runtime of its
    /// own (the tests that call it are not async).
    pub(super) fn authorized(&self, authorization: Option<&HeaderValue>) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(self.authorize(authorization)) == Verdict::Passed
    }

    /// Takes every bcrypt permit, as checks in progress would, until the result is dropped;
    /// `None` without `basic_auth_users`.
    pub(crate) fn occupy_bcrypt(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.basic_auth.as_ref().map(BasicAuth::occupy_bcrypt)
    }
}

/// A CA that issues server and client certificates.
pub(super) struct Ca {
    pub(super) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub(super) struct Leaf {
    pub(super) cert: String,
    pub(super) key: String,
}

impl Ca {
    pub(super) fn new(name: &str) -> Ca {
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

    pub(super) fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
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

/// A temp dir with server.crt/.key (from `ca`), client-ca.crt, and web.yml written on demand.
pub(super) struct Setup {
    dir: tempfile::TempDir,
    pub(super) ca: Ca,
    pub(super) client_ca: Ca,
}

impl Setup {
    pub(super) fn new() -> Setup {
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

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` as web.yml and loads it.
    pub(super) fn load(&self, text: &str) -> Result<WebConfig, WebConfigError> {
        let path = self.path("web.yml");
        std::fs::write(&path, text).unwrap();
        WebConfig::from_file(&path)
    }

    /// The message of loading `text`, which must fail; it starts with the file's path.
    pub(super) fn error(&self, text: &str) -> String {
        let message = self.load(text).unwrap_err().to_string();
        let path = self.path("web.yml").display().to_string();
        assert!(message.starts_with(&path), "{message}");
        message[path.len()..].to_string()
    }

    pub(super) fn tls(&self, extra: &str) -> String {
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}")
    }
}
