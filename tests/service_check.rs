//! The service check in process, against servers the tests run on loopback: TLS with
//! certificates made here (valid for a CA file, expired, self-signed) and an HTTP responder
//! behind them, SMTP with STARTTLS, a server that sends forever, one that never speaks, and a
//! `query`; then the same findings as `/metrics` lines.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use port_exporter::config::Config;
use port_exporter::domain::{Reason, Service, State, TlsMode};
use port_exporter::probe::{Outcome, Probe, TcpProbe};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The HTTP responder's answer, behind TLS or not.
const HTTP_REPLY: &[u8] = b"HTTP/1.0 200 OK\r\nServer: tiny/1.0\r\nContent-Length: 2\r\n\r\nok";

/// A certificate and its key, as a TLS server takes them.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Its notAfter, as a Unix time.
    not_after: i64,
}

/// A CA, written to a PEM file the config's `ca_file` names.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    file: tempfile::NamedTempFile,
    der: CertificateDer<'static>,
}

/// The CA's notAfter: before its valid leaf's, so that the chain's earliest is the CA's.
const CA_NOT_AFTER: (i32, u8, u8) = (2089, 12, 31);

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = date_time_ymd(CA_NOT_AFTER.0, CA_NOT_AFTER.1, CA_NOT_AFTER.2);
        let cert = params.self_signed(&key).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            file,
            der: cert.der().clone(),
        }
    }

    fn path(&self) -> String {
        self.file.path().display().to_string()
    }

    /// A certificate for localhost, valid between the two dates.
    fn issue(&self, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Leaf {
        let (params, key) = localhost(not_before, not_after);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        leaf(cert.der().clone(), key, not_after)
    }

    /// [`Ca::issue`], served with the CA's certificate after the leaf's: the chain's earliest
    /// notAfter is then the CA's.
    fn issue_with_chain(&self, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Leaf {
        let mut leaf = self.issue(not_before, not_after);
        leaf.chain.push(self.der.clone());
        let ca = date_time_ymd(CA_NOT_AFTER.0, CA_NOT_AFTER.1, CA_NOT_AFTER.2);
        leaf.not_after = leaf.not_after.min(ca.unix_timestamp());
        leaf
    }
}

fn localhost(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
    (params, KeyPair::generate().unwrap())
}

fn leaf(der: CertificateDer<'static>, key: KeyPair, not_after: (i32, u8, u8)) -> Leaf {
    Leaf {
        chain: vec![der],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        not_after: date_time_ymd(not_after.0, not_after.1, not_after.2).unix_timestamp(),
    }
}

fn self_signed() -> Leaf {
    let (params, key) = localhost((2024, 1, 1), (2090, 1, 1));
    let cert = params.self_signed(&key).unwrap();
    leaf(cert.der().clone(), key, (2090, 1, 1))
}

fn acceptor(leaf: &Leaf) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Answers an HTTP request (once it has its head) with [`HTTP_REPLY`].
async fn respond_http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(HTTP_REPLY).await;
    let _ = stream.shutdown().await;
}

/// A TLS server with `leaf` and an HTTP responder behind it, on a port of its own.
async fn https_server(leaf: &Leaf) -> SocketAddr {
    let acceptor = acceptor(leaf);
    serve(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                respond_http(tls).await;
            }
        }
    })
    .await
}

/// Runs `handle` on every connection to a listener on 127.0.0.1 (an OS-chosen port above the
/// ones the port hints name).
async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Probes `addr` as the target `keys` (TOML lines) describe it, with a budget of 1 s.
async fn check(addr: SocketAddr, keys: &str) -> Outcome {
    check_within(addr, "1s", keys).await
}

/// [`check`] with the target's `timeout` (the check's budget).
async fn check_within(addr: SocketAddr, timeout: &str, keys: &str) -> Outcome {
    let text = format!(
        "[[targets]]\nhost = \"127.0.0.1\"\nports = [{}]\ntimeout = {timeout:?}\nretries = 0\n{keys}",
        addr.port()
    );
    let config = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let target = &config.targets[0];
    TcpProbe::default()
        .probe_service(addr, target.attempts(), target.service.as_deref())
        .await
}

/// What the handshake showed on `addr`, checked as `keys` say.
async fn cert_of(addr: SocketAddr, keys: &str) -> port_exporter::probe::service::TlsFinding {
    let found = check(addr, keys).await.service.expect("a service finding");
    found.cert.clone().expect("the handshake's facts")
}

#[tokio::test]
async fn tls_yields_expiry_verification_and_the_service_behind_it_whatever_the_chain() {
    let ca = Ca::new();
    let valid = ca.issue_with_chain((2024, 1, 1), (2090, 6, 30));
    assert_eq!(
        valid.not_after,
        date_time_ymd(CA_NOT_AFTER.0, CA_NOT_AFTER.1, CA_NOT_AFTER.2).unix_timestamp()
    );
    let expired = ca.issue((2020, 1, 1), (2021, 3, 15));
    let unknown = self_signed();
    let keys = format!(
        "service = \"auto\"\n[targets.tls]\nserver_name = \"localhost\"\nca_file = {:?}\n",
        ca.path()
    );
    for (leaf, verified) in [(&valid, 1), (&expired, 0), (&unknown, 0)] {
        let addr = https_server(leaf).await;
        let outcome = check(addr, &keys).await;
        assert_eq!(outcome.state, State::Open);
        let found = outcome.service.expect("a service finding");
        assert_eq!(
            (found.service, found.tls, found.reason),
            (Service::Http, TlsMode::Implicit, Reason::Matched),
            "{found:?}"
        );
        assert_eq!(found.version.as_deref(), Some("tiny/1.0"));
        let cert = found.cert.as_ref().expect("the handshake's facts");
        assert_eq!(cert.expiry, Some(leaf.not_after), "{found:?}");
        assert_eq!(cert.verified, Some(verified == 1), "{found:?}");
        assert!(cert.version == "TLS 1.3" || cert.version == "TLS 1.2");
        assert_eq!(found.unexpected, None, "auto expects nothing");
    }
    // The valid chain does not verify for another name; insecure_skip_verify verifies nothing.
    let addr = https_server(&valid).await;
    let other = keys.replace("\"localhost\"", "\"other.example\"");
    let cert = cert_of(addr, &other).await;
    assert_eq!(cert.verified, Some(false));
    let cert = cert_of(addr, &format!("{keys}insecure_skip_verify = true\n")).await;
    assert_eq!((cert.verified, cert.expiry), (None, Some(valid.not_after)));
}

#[tokio::test]
async fn an_expected_service_is_verified_and_another_one_is_reported_unexpected() {
    let addr = https_server(&self_signed()).await;
    let tls = check(addr, "service = \"tls\"\n").await.service.unwrap();
    assert_eq!((tls.unexpected, tls.reason), (Some(false), Reason::Matched));
    let http = check(addr, "service = \"http\"\n").await.service.unwrap();
    assert_eq!(
        (http.unexpected, http.tls),
        (Some(false), TlsMode::Implicit)
    );
    let ssh = check(addr, "service = \"ssh\"\n").await.service.unwrap();
    assert_eq!(
        (ssh.service, ssh.unexpected, ssh.reason),
        (Service::Http, Some(true), Reason::BannerMismatch)
    );
    // Plain HTTP where TLS must be.
    let plain = serve(respond_http).await;
    let found = check(plain, "service = \"tls\"\n").await.service.unwrap();
    assert_eq!(
        (found.service, found.tls, found.unexpected, found.reason),
        (Service::Http, TlsMode::None, Some(true), Reason::NoTls)
    );
}

/// A line-based server that greets with `greeting`, answers each line that starts with one
/// of `replies`' prefixes with its reply, and shakes hands with `leaf` after the one that
/// starts TLS (the last).
async fn starttls_server(
    leaf: &Leaf,
    greeting: &'static [u8],
    replies: &'static [(&'static [u8], &'static [u8])],
) -> SocketAddr {
    let acceptor = acceptor(leaf);
    serve(move |mut stream| {
        let acceptor = acceptor.clone();
        async move {
            let _ = stream.write_all(greeting).await;
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                match stream.read(&mut byte).await {
                    Ok(1) => line.push(byte[0]),
                    _ => return,
                }
                if byte[0] != b'\n' {
                    continue;
                }
                let Some(at) = replies
                    .iter()
                    .position(|(asked, _)| line.starts_with(asked))
                else {
                    return;
                };
                let _ = stream.write_all(replies[at].1).await;
                if at == replies.len() - 1 {
                    let _ = acceptor.accept(stream).await;
                    return;
                }
                line.clear();
            }
        }
    })
    .await
}

/// An SMTP server that offers STARTTLS and then shakes hands with `leaf`.
async fn smtp_server(leaf: &Leaf) -> SocketAddr {
    const EHLO: &[u8] = b"250-mail.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
    let replies: &[(&[u8], &[u8])] = &[(b"EHLO", EHLO), (b"STARTTLS", b"220 go ahead\r\n")];
    starttls_server(leaf, b"220 mail.test ESMTP tiny\r\n", replies).await
}

#[tokio::test]
async fn smtp_is_asked_for_starttls_to_read_its_certificate() {
    let leaf = self_signed();
    let addr = smtp_server(&leaf).await;
    let found = check(addr, "service = \"smtp\"\n").await.service.unwrap();
    assert_eq!(
        (found.service, found.tls, found.reason, found.unexpected),
        (
            Service::Smtp,
            TlsMode::StartTls,
            Reason::Matched,
            Some(false)
        )
    );
    assert_eq!(found.cert.as_ref().unwrap().expiry, Some(leaf.not_after));
    // "tls" is any service over TLS, STARTTLS included.
    let tls = check(addr, "service = \"tls\"\n").await.service.unwrap();
    assert_eq!((tls.tls, tls.unexpected), (TlsMode::StartTls, Some(false)));
}

#[tokio::test]
async fn imap_pop3_and_postgresql_are_asked_for_tls_too() {
    let leaf = self_signed();
    let imap = starttls_server(
        &leaf,
        b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
        &[(b"a1 STARTTLS", b"a1 OK Begin TLS negotiation now.\r\n")],
    )
    .await;
    let pop3 = starttls_server(
        &leaf,
        b"+OK ready\r\n",
        &[(b"STLS", b"+OK Begin TLS negotiation now.\r\n")],
    )
    .await;
    let acceptor = acceptor(&leaf);
    let postgresql = serve(move |mut stream| {
        let acceptor = acceptor.clone();
        async move {
            let mut request = [0u8; 8];
            if stream.read_exact(&mut request).await.is_ok()
                && request == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                && stream.write_all(b"S").await.is_ok()
            {
                let _ = acceptor.accept(stream).await;
            }
        }
    })
    .await;
    for (addr, service) in [
        (imap, Service::Imap),
        (pop3, Service::Pop3),
        (postgresql, Service::Postgresql),
    ] {
        let found = check(addr, "service = \"auto\"\n").await.service.unwrap();
        assert_eq!(
            (found.service, found.tls, found.reason),
            (service, TlsMode::StartTls, Reason::Matched),
            "{found:?}"
        );
        assert_eq!(found.cert.as_ref().unwrap().expiry, Some(leaf.not_after));
    }
}

#[tokio::test]
async fn a_tls_server_that_answers_plain_text_with_a_plain_400_is_still_tls() {
    // As nginx's TLS ports do: bytes that are no ClientHello get an HTTP 400 in clear text.
    let leaf = self_signed();
    let acceptor = acceptor(&leaf);
    let addr = serve(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await.is_err() {
                return;
            }
            if first[0] == 0x16 {
                if let Ok(tls) = acceptor.accept(stream).await {
                    respond_http(tls).await;
                }
            } else {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nServer: tiny/1.0\r\n\r\n")
                    .await;
            }
        }
    })
    .await;
    let found = check(addr, "service = \"auto\"\n").await.service.unwrap();
    assert_eq!(
        (found.service, found.tls, found.reason),
        (Service::Http, TlsMode::Implicit, Reason::Matched),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_server_that_sends_forever_is_read_up_to_the_byte_limit() {
    // A greeting that never ends: 220- continues it, line after line.
    let addr = serve(|mut stream| async move {
        let lines = b"220-still greeting\r\n".repeat(200);
        while stream.write_all(&lines).await.is_ok() {}
    })
    .await;
    let started = std::time::Instant::now();
    let outcome = check(addr, "service = \"auto\"\n").await;
    let took = started.elapsed();
    let found = outcome.service.unwrap();
    assert_eq!(outcome.state, State::Open);
    assert_eq!(
        (found.service, found.reason),
        (Service::Unknown, Reason::ByteLimit)
    );
    // Stopped by the limit, not by the budget (1 s).
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Bytes no rule could take are judged at once, not read to the limit.
    let junk = serve(|mut stream| async move {
        let junk = [b'#'; 4096];
        while stream.write_all(&junk).await.is_ok() {}
    })
    .await;
    let found = check(junk, "service = \"auto\"\n").await.service.unwrap();
    assert_eq!(
        (found.service, found.reason),
        (Service::Unknown, Reason::BannerMismatch)
    );
}

#[tokio::test]
async fn a_server_that_never_speaks_costs_the_budget_and_is_reset() {
    let (reset_tx, mut reset_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |mut stream| {
        let reset_tx = reset_tx.clone();
        async move {
            // Reads what comes and says nothing; reports how each connection ended.
            let mut buf = [0u8; 4096];
            let ended = loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break "fin",
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
                    Err(_) => break "error",
                }
            };
            let _ = reset_tx.send(ended);
        }
    })
    .await;
    for (keys, reason) in [
        ("service = \"auto\"\n", Reason::Timeout),
        ("service = \"ssh\"\n", Reason::NoBanner),
    ] {
        let started = std::time::Instant::now();
        let outcome = check(addr, keys).await;
        let took = started.elapsed();
        let found = outcome.service.unwrap();
        assert_eq!(outcome.state, State::Open, "a failed check is still open");
        assert_eq!((found.service, found.reason), (Service::Unknown, reason));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1_150),
            "{keys}: {took:?} for a budget of 1 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut ends = Vec::new();
        while let Ok(ended) = reset_rx.try_recv() {
            ends.push(ended);
        }
        assert!(!ends.is_empty() && ends.len() <= 4, "{ends:?}");
        assert!(ends.iter().all(|e| *e == "reset"), "{ends:?}");
    }
}

#[tokio::test]
async fn the_budget_bounds_an_exchange_that_starts_late() {
    // Silent to anything but a ClientHello; a slow handshake (300 ms), then silent inside TLS.
    // With a budget of 2 s: the greeting's wait and PING's end at 1 s, the handshake at 1.3 s,
    // the greeting inside at 1.8 s, and the HTTP request inside, whose quarter would end at
    // 2.3 s, at the budget's end.
    let acceptor = acceptor(&self_signed());
    let addr = serve(move |mut stream| {
        let acceptor = acceptor.clone();
        async move {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await.is_err() {
                return;
            }
            let mut buf = [0u8; 1024];
            if first[0] != 0x16 {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Ok(mut tls) = acceptor.accept(stream).await {
                while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }
    })
    .await;
    let started = std::time::Instant::now();
    let found = check_within(addr, "2s", "service = \"auto\"\n")
        .await
        .service
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (found.service, found.tls, found.reason),
        (Service::Unknown, TlsMode::Implicit, Reason::Timeout)
    );
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_millis(2_200),
        "{took:?} for a budget of 2 s"
    );
}

#[tokio::test]
async fn without_a_check_nothing_is_sent_and_nothing_is_found() {
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |mut stream| {
        let got_tx = got_tx.clone();
        async move {
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf).await;
            let _ = got_tx.send(buf.len());
        }
    })
    .await;
    let outcome = check(addr, "").await;
    assert_eq!((outcome.state, outcome.service), (State::Open, None));
    let got = tokio::time::timeout(Duration::from_secs(2), got_rx.recv()).await;
    assert_eq!(got.unwrap(), Some(0));
}

#[tokio::test]
async fn a_query_is_the_check() {
    let addr = serve(|mut stream| async move {
        let _ = stream.write_all(b"HELLO proto/2\r\n").await;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        if got == b"\x01\x02PING\n" {
            let _ = stream.write_all(b"PONG 42\n").await;
        }
        let _ = stream.read(&mut buf).await;
    })
    .await;
    let steps = |expect: &str| {
        format!(
            "query = [{{ expect = \"^HELLO proto/(\\\\d)\" }}, {{ send_hex = \"0102\" }}, {{ send = \"PING\\n\", expect = \"{expect}\" }}]\n"
        )
    };
    let found = check(addr, &steps("^PONG \\\\d+")).await.service.unwrap();
    assert_eq!(
        (found.service, found.reason, found.unexpected),
        (Service::Custom, Reason::Matched, Some(false))
    );
    let named = format!("service = \"redis\"\n{}", steps("^PONG"));
    assert_eq!(
        check(addr, &named).await.service.unwrap().service,
        Service::Redis
    );
    let found = check(addr, &steps("^PANG")).await.service.unwrap();
    assert_eq!(
        (found.reason, found.unexpected),
        (Reason::QueryMismatch, Some(true))
    );
}

/// The labels of web's series on `port`, and `extra`.
fn labels<'a>(port: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("target", "web"),
        ("host", "127.0.0.1"),
        ("team", "a"),
        ("ip", "127.0.0.1"),
        ("port", port),
    ];
    labels.extend_from_slice(extra);
    labels
}

#[test]
fn the_findings_are_on_metrics() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = Ca::new();
    let leaf = ca.issue((2024, 1, 1), (2091, 2, 3));
    let (tls, plain) =
        runtime.block_on(async { (https_server(&leaf).await, serve(respond_http).await) });
    let text = format!(
        "[[targets]]\nname = \"web\"\nhost = \"127.0.0.1\"\nports = [{}, {}]\ntimeout = \"1s\"\nservice = \"tls\"\nlabels = {{ team = \"a\" }}\n[targets.tls]\nserver_name = \"localhost\"\nca_file = {:?}\n",
        tls.port(),
        plain.port(),
        ca.path()
    );
    let exporter = common::start_exporter(&text);
    common::wait_ready(exporter.addr, Duration::from_secs(10));
    let body = common::get(exporter.addr, "/metrics").text();
    let samples = common::parse_samples(&body);
    let port = |addr: SocketAddr| addr.port().to_string();
    let (tls_port, plain_port) = (port(tls), port(plain));
    let at = |port| labels(port, &[]);
    let with = labels;
    let info = with(
        &tls_port,
        &[
            ("service", "http"),
            ("tls", "implicit"),
            ("version", "tiny/1.0"),
        ],
    );
    assert_eq!(
        common::value(&samples, "port_service_info", &info),
        1.0,
        "{body}"
    );
    assert_eq!(
        common::value(&samples, "port_service_unexpected", &at(&tls_port)),
        0.0
    );
    let matched = with(&tls_port, &[("reason", "matched")]);
    assert_eq!(
        common::value(&samples, "port_service_reason", &matched),
        1.0
    );
    assert_eq!(
        common::value(
            &samples,
            "port_tls_cert_expiry_timestamp_seconds",
            &at(&tls_port)
        ),
        leaf.not_after as f64
    );
    assert_eq!(
        common::value(&samples, "port_tls_cert_verified", &at(&tls_port)),
        1.0
    );
    assert_eq!(
        common::find(&samples, "port_tls_version_info", &at(&tls_port)).len(),
        1
    );
    // Plain HTTP where TLS must be: unexpected, and no TLS series.
    assert_eq!(
        common::value(&samples, "port_service_unexpected", &at(&plain_port)),
        1.0
    );
    let no_tls = with(&plain_port, &[("reason", "no-tls")]);
    assert_eq!(common::value(&samples, "port_service_reason", &no_tls), 1.0);
    assert!(
        common::find(
            &samples,
            "port_tls_cert_expiry_timestamp_seconds",
            &at(&plain_port)
        )
        .is_empty()
    );
    // The state says what the network did.
    assert_eq!(common::state_of(&samples, &at(&plain_port)), "open");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(leaf.not_after as f64 > now);
    exporter.stop();
}

/// `/probe?service=`: the service check on demand, its families in the answer with the HELP
/// of `/metrics`, `probe_success` 0 when the service breaks the name asked for, and a word
/// the config would refuse is a 400.
#[test]
fn probe_checks_the_service_the_request_asks_for() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let leaf = self_signed();
    let (ssh, tls) = runtime.block_on(async {
        let ssh = serve(|mut stream: TcpStream| async move {
            let _ = stream.write_all(b"SSH-2.0-test\r\n").await;
            let mut buf = [0u8; 256];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        (ssh, https_server(&leaf).await)
    });
    let exporter = common::start_exporter(
        "[defaults]\ntimeout = \"1s\"\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
    );
    common::wait_ready(exporter.addr, Duration::from_secs(10));
    let probe = |addr: SocketAddr, query: &str| {
        let path = format!("/probe?target=127.0.0.1:{}&{query}", addr.port());
        let response = common::get(exporter.addr, &path);
        (response.status, response.text())
    };
    let series = |addr: SocketAddr| addr.port().to_string();
    let (ssh_port, tls_port) = (series(ssh), series(tls));
    fn at(port: &str) -> Vec<(&str, &str)> {
        vec![("host", "127.0.0.1"), ("port", port), ("ip", "127.0.0.1")]
    }
    let success = |body: &str| common::value(&common::parse_samples(body), "probe_success", &[]);

    // What was asked for.
    let (status, body) = probe(ssh, "service=ssh");
    assert_eq!(status, 200, "{body}");
    let samples = common::parse_samples(&body);
    let mut info = at(&ssh_port);
    info.extend([("service", "ssh"), ("tls", "none")]);
    assert_eq!(
        common::value(&samples, "port_service_info", &info),
        1.0,
        "{body}"
    );
    let unexpected = |samples: &[common::Sample], port: &str| {
        common::value(samples, "port_service_unexpected", &at(port))
    };
    assert_eq!(unexpected(&samples, &ssh_port), 0.0);
    assert_eq!(success(&body), 1.0, "{body}");
    assert!(
        body.contains("# HELP port_service_info 1 for the service found"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE port_service_unexpected gauge\n"),
        "{body}"
    );

    // Something else than what was asked for: the port is open, the probe fails.
    let (status, body) = probe(ssh, "service=http");
    assert_eq!(status, 200, "{body}");
    let samples = common::parse_samples(&body);
    assert_eq!(unexpected(&samples, &ssh_port), 1.0, "{body}");
    assert_eq!(common::state_of(&samples, &at(&ssh_port)), "open");
    assert_eq!(success(&body), 0.0, "{body}");

    // TLS: the expiry whatever the chain, which does not verify against the system roots.
    let (status, body) = probe(tls, "service=tls&tls_server_name=localhost");
    assert_eq!(status, 200, "{body}");
    let samples = common::parse_samples(&body);
    let expiry = "port_tls_cert_expiry_timestamp_seconds";
    let at_tls = at(&tls_port);
    assert_eq!(
        common::value(&samples, expiry, &at_tls),
        leaf.not_after as f64,
        "{body}"
    );
    assert_eq!(
        common::value(&samples, "port_tls_cert_verified", &at_tls),
        0.0
    );
    assert_eq!(unexpected(&samples, &tls_port), 0.0);
    assert_eq!(success(&body), 1.0, "{body}");
    let (_, body) = probe(tls, "service=auto&tls_insecure_skip_verify=true");
    let samples = common::parse_samples(&body);
    assert_eq!(
        common::value(&samples, expiry, &at_tls),
        leaf.not_after as f64,
        "{body}"
    );
    assert!(common::find(&samples, "port_tls_cert_verified", &at_tls).is_empty());
    assert!(common::find(&samples, "port_service_unexpected", &at_tls).is_empty());

    // Without service=: connect only, as before.
    let (_, body) = probe(ssh, "expect=open");
    assert!(
        !body.contains("port_service") && !body.contains("port_tls"),
        "{body}"
    );

    // Words the config would refuse, and a file, are refused before anything is connected.
    for query in [
        "service=sshd",
        "service=",
        "service=tls&tls_server_name=not%20a%20name",
        "service=tls&tls_insecure_skip_verify=yes",
        "tls_server_name=localhost",
        "service=tls&tls_ca_file=/etc/passwd",
    ] {
        let (status, body) = probe(tls, query);
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (_, body) = probe(ssh, "service=sshd");
    assert!(
        body.contains("invalid service \"sshd\": expected \"auto\", \"tls\" or a service name"),
        "{body}"
    );
    exporter.stop();
}
