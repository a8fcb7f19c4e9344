//! The match rules: what a server's bytes say it is. Pure functions of the bytes read so far,
//! tested on greetings captured from real servers.
//!
//! Each rule answers [`Rule::Match`], [`Rule::More`] (the bytes so far could still become a
//! match: read on) or [`Rule::No`]. A rule is sure before it matches: a prefix that only its
//! protocol sends (`SSH-2.0-`, `* OK`, a MySQL handshake packet's shape), and for line-based
//! protocols the whole greeting, so that what follows on the connection (a STARTTLS command)
//! starts clean. Written after the shapes that nmap's service probes recognise, not copied
//! from them.

use crate::domain::Service;

/// What the bytes of one exchange say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Found(Identified),
    /// A `220` greeting that names neither SMTP nor FTP: an `EHLO` tells them apart.
    Ambiguous220,
    /// An HTTP server that says this port speaks TLS (a plain request sent to a TLS port).
    WantsTls,
    /// Something no rule knows.
    NoMatch,
}

/// A service found, and the version it announces (only where short and plain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identified {
    pub service: Service,
    pub version: Option<Box<str>>,
}

/// One rule's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Rule {
    Match(Verdict),
    More,
    No,
}

/// A rule: the bytes read so far, and whether more can come (`done`: no more will).
pub type RuleFn = fn(&[u8], bool) -> Rule;

/// The rules for any reply, greeting or not: a server that speaks first greets whatever it is
/// sent, and an HTTP or Redis server may answer another probe's bytes. [`decide`] tries them
/// after the probe's own.
pub const ANY: &[RuleFn] = &[
    ssh,
    code_220,
    pop3,
    imap,
    mysql,
    http,
    redis,
    postgresql_error,
];

/// No rules of a probe's own: [`ANY`] alone.
pub const ONLY_ANY: &[RuleFn] = &[];

/// The rule for the reply to PostgreSQL's SSLRequest, its one-byte answer: tried first.
pub const SSL_REQUEST: &[RuleFn] = &[postgresql_ssl];

/// The longest version label kept; a longer announcement is left out.
pub const MAX_VERSION: usize = 64;

/// The joint answer of a probe's own `rules`, then of [`ANY`]: the first match; `None` while
/// one of them wants more bytes and more can come; else [`Verdict::NoMatch`].
pub fn decide(rules: &[RuleFn], bytes: &[u8], done: bool) -> Option<Verdict> {
    let mut more = false;
    for rule in rules.iter().chain(ANY) {
        match rule(bytes, done) {
            Rule::Match(verdict) => return Some(verdict),
            Rule::More => more = true,
            Rule::No => {}
        }
    }
    if more && !done {
        None
    } else {
        Some(Verdict::NoMatch)
    }
}

fn found(service: Service, version: Option<&[u8]>) -> Rule {
    Rule::Match(Verdict::Found(Identified {
        service,
        version: version.and_then(version_label),
    }))
}

/// A version as a label: short, and only the characters versions are made of.
fn version_label(raw: &[u8]) -> Option<Box<str>> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"._-+~:/()".contains(b);
    (!raw.is_empty() && raw.len() <= MAX_VERSION && raw.iter().all(plain))
        .then(|| String::from_utf8_lossy(raw).into())
}

/// Whether `bytes` starts with `prefix`: `Some(true)`, `Some(false)`, or `None` while they
/// are a shorter prefix of it.
fn starts(bytes: &[u8], prefix: &[u8]) -> Option<bool> {
    if bytes.len() >= prefix.len() {
        Some(bytes.starts_with(prefix))
    } else if prefix.starts_with(bytes) {
        None
    } else {
        Some(false)
    }
}

/// The first line (without its line end), once it is complete.
fn first_line(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some(bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]))
}

/// A rule for a line-based greeting: one of `prefixes` as the first word(s), then the whole
/// first line.
fn line_rule(bytes: &[u8], done: bool, prefixes: &[&[u8]], service: Service) -> Rule {
    let mut maybe = false;
    for prefix in prefixes {
        match starts(bytes, prefix) {
            Some(true) => {
                let line = match first_line(bytes) {
                    Some(line) => line,
                    None if done => bytes,
                    None => {
                        maybe = true;
                        continue;
                    }
                };
                // A word ends where the prefix does: `+OKAY` is not `+OK`.
                let open_ended = prefix.last().is_some_and(|b| !b.is_ascii_alphanumeric());
                if open_ended
                    || line
                        .get(prefix.len())
                        .is_none_or(|b| !b.is_ascii_alphanumeric())
                {
                    return found(service, None);
                }
            }
            None => maybe = true,
            Some(false) => {}
        }
    }
    if maybe && !done { Rule::More } else { Rule::No }
}

/// SSH's identification line (RFC 4253): `SSH-protoversion-softwareversion [comments]`; the
/// software version is the version label (`OpenSSH_9.2p1`).
pub fn ssh(bytes: &[u8], done: bool) -> Rule {
    match starts(bytes, b"SSH-") {
        Some(false) => return Rule::No,
        None => return if done { Rule::No } else { Rule::More },
        Some(true) => {}
    }
    let line = match first_line(bytes) {
        Some(line) => line,
        None if done || bytes.len() >= 255 => bytes,
        None => return Rule::More,
    };
    let rest = &line[4..];
    let Some(dash) = rest.iter().position(|&b| b == b'-') else {
        return Rule::No;
    };
    let proto = &rest[..dash];
    let well_formed = proto.split(|&b| b == b'.').count() == 2
        && proto.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        && !proto.starts_with(b".")
        && !proto.ends_with(b".");
    if !well_formed {
        return Rule::No;
    }
    let software = &rest[dash + 1..];
    let end = software
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(software.len());
    found(Service::Ssh, Some(&software[..end]))
}

/// A `220` greeting, SMTP's (RFC 5321) or FTP's (RFC 959), one line or several (`220-`
/// continues, `220 ` ends). The text names which; when it names neither,
/// [`Verdict::Ambiguous220`].
pub fn code_220(bytes: &[u8], done: bool) -> Rule {
    match starts(bytes, b"220") {
        Some(false) => return Rule::No,
        None => return if done { Rule::No } else { Rule::More },
        Some(true) => {}
    }
    let mut rest = bytes;
    let mut text = Vec::new();
    loop {
        let Some(line) = first_line(rest) else {
            // An unfinished last line: the greeting is what came, if no more will.
            if !done {
                return Rule::More;
            }
            text.extend_from_slice(rest);
            break;
        };
        if !line.starts_with(b"220") {
            return Rule::No;
        }
        text.extend_from_slice(line);
        text.push(b'\n');
        rest = &rest[rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len()) + 1..];
        match line.get(3) {
            None | Some(b' ') => break,
            Some(b'-') => {}
            Some(_) => return Rule::No,
        }
        if rest.is_empty() && done {
            break;
        }
    }
    let text = text.to_ascii_lowercase();
    let mentions = |word: &[u8]| text.windows(word.len()).any(|w| w == word);
    if mentions(b"smtp") {
        found(Service::Smtp, None)
    } else if mentions(b"ftp") {
        found(Service::Ftp, None)
    } else {
        Rule::Match(Verdict::Ambiguous220)
    }
}

/// POP3's greeting (RFC 1939): `+OK ...`.
pub fn pop3(bytes: &[u8], done: bool) -> Rule {
    line_rule(bytes, done, &[b"+OK"], Service::Pop3)
}

/// IMAP's greeting (RFC 9051): `* OK`, `* PREAUTH`, or `* BYE` when it turns the client away.
pub fn imap(bytes: &[u8], done: bool) -> Rule {
    line_rule(
        bytes,
        done,
        &[b"* OK", b"* PREAUTH", b"* BYE"],
        Service::Imap,
    )
}

/// MySQL's and MariaDB's first packet: a 3-byte little-endian length and sequence number 0,
/// then either the handshake (protocol 10 and the NUL-terminated server version, the version
/// label) or an error packet (`0xff`, a 2-byte code, a message: "Host ... is not allowed").
pub fn mysql(bytes: &[u8], done: bool) -> Rule {
    const MAX_PACKET: usize = 4096;
    if bytes.len() < 5 {
        // Nothing sure can be said of a few bytes; a short packet is no handshake.
        return if done { Rule::No } else { Rule::More };
    }
    let length = usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16;
    if bytes[3] != 0 || !(8..=MAX_PACKET).contains(&length) || !matches!(bytes[4], 0x0a | 0xff) {
        return Rule::No;
    }
    let Some(payload) = bytes.get(4..4 + length) else {
        return if done { Rule::No } else { Rule::More };
    };
    if payload[0] == 0xff {
        let message = &payload[3..];
        let printable = message.iter().all(|b| (0x20..0x7f).contains(b));
        return if printable {
            found(Service::Mysql, None)
        } else {
            Rule::No
        };
    }
    let Some(end) = payload[1..].iter().position(|&b| b == 0) else {
        return Rule::No;
    };
    let version = &payload[1..1 + end];
    let plain = !version.is_empty() && version.iter().all(|b| (0x21..0x7f).contains(b));
    // After the version: the 4-byte connection id, 8 bytes of salt and a filler NUL.
    let shaped = payload.len() >= 1 + end + 1 + 13 && payload[1 + end + 1 + 12] == 0;
    if plain && shaped {
        found(Service::Mysql, Some(version))
    } else {
        Rule::No
    }
}

/// An HTTP response's status line (`HTTP/1.1 200 OK`), then its headers; the `Server` header
/// is the version label. A 400 whose body says a plain request reached a TLS port (nginx,
/// Apache) is [`Verdict::WantsTls`].
pub fn http(bytes: &[u8], done: bool) -> Rule {
    match starts(bytes, b"HTTP/") {
        Some(false) => return Rule::No,
        None => return if done { Rule::No } else { Rule::More },
        Some(true) => {}
    }
    let Some(line) = first_line(bytes) else {
        return if done || bytes.len() > 512 {
            Rule::No
        } else {
            Rule::More
        };
    };
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = &parts.next().unwrap_or_default()[5..];
    let status = parts.next().unwrap_or_default();
    let version_ok = !version.is_empty()
        && version.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        && version[0].is_ascii_digit();
    if !version_ok || status.len() != 3 || !status.iter().all(u8::is_ascii_digit) {
        return Rule::No;
    }
    let head_end = find(bytes, b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| find(bytes, b"\n\n").map(|at| at + 2));
    let Some(head_end) = head_end else {
        return if done {
            found(Service::Http, None)
        } else {
            Rule::More
        };
    };
    // A refusal of plain text on a TLS port says so in its body, which may still be coming.
    if status == b"400" {
        if !done {
            return Rule::More;
        }
        let body = bytes[head_end..].to_ascii_lowercase();
        let says = |words: &[u8]| find(&body, words).is_some();
        if says(b"https port") || says(b"ssl-enabled server port") || says(b"plain http request") {
            return Rule::Match(Verdict::WantsTls);
        }
    }
    let server = bytes[..head_end].split(|&b| b == b'\n').find_map(|header| {
        let (name, value) = header.split_at(header.iter().position(|&b| b == b':')?);
        name.eq_ignore_ascii_case(b"server")
            .then(|| value[1..].trim_ascii())
    });
    found(Service::Http, server)
}

/// Redis' answers: `+PONG` to PING, `-NOAUTH` and `-DENIED` (protected mode) to any command,
/// and its complaint about an HTTP request's `GET` with two arguments.
pub fn redis(bytes: &[u8], done: bool) -> Rule {
    const LINES: [&[u8]; 5] = [
        b"+PONG",
        b"-NOAUTH ",
        b"-DENIED Redis",
        b"-ERR wrong number of arguments for 'get' command",
        b"-ERR operation not permitted",
    ];
    line_rule(bytes, done, &LINES, Service::Redis)
}

/// PostgreSQL's answer to the SSLRequest: one byte, `S` (TLS offered) or `N` (not).
pub fn postgresql_ssl(bytes: &[u8], _done: bool) -> Rule {
    match bytes {
        [] => Rule::More,
        b"S" | b"N" => found(Service::Postgresql, None),
        _ => Rule::No,
    }
}

/// A PostgreSQL error response to bytes it cannot take: `E`, then (protocol 3) a length and
/// the severity field `SFATAL`/`SERROR`, or (protocol 2) the text `FATAL`.
pub fn postgresql_error(bytes: &[u8], done: bool) -> Rule {
    let shapes: [(&[u8], usize); 4] =
        [(b"SFATAL", 5), (b"SERROR", 5), (b"FATAL", 1), (b"ERROR", 1)];
    if bytes.first().is_some_and(|&b| b != b'E') {
        return Rule::No;
    }
    let mut more = false;
    for (shape, at) in shapes {
        match bytes.get(at..).map(|rest| starts(rest, shape)) {
            Some(Some(true)) => return found(Service::Postgresql, None),
            Some(None) | None => more = true,
            Some(Some(false)) => {}
        }
    }
    if more && !done { Rule::More } else { Rule::No }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! captured {
        ($file:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/banners/",
                $file
            ))
        };
    }

    fn found(service: Service, version: Option<&str>) -> Option<Verdict> {
        Some(Verdict::Found(Identified {
            service,
            version: version.map(Into::into),
        }))
    }

    #[test]
    fn greetings_captured_from_real_servers_name_their_service() {
        let cases: [(&[u8], Service, Option<&str>); 6] = [
            (
                captured!("openssh.bin"),
                Service::Ssh,
                Some("OpenSSH_9.2p1"),
            ),
            (captured!("exim.bin"), Service::Smtp, None),
            (captured!("dovecot-imap.bin"), Service::Imap, None),
            (captured!("dovecot-pop3.bin"), Service::Pop3, None),
            (captured!("vsftpd.bin"), Service::Ftp, None),
            (
                captured!("mariadb.bin"),
                Service::Mysql,
                Some("5.5.5-10.11.19-MariaDB-0+deb12u1"),
            ),
        ];
        for (bytes, service, version) in cases {
            let text = String::from_utf8_lossy(bytes);
            // Whole, as it came: decided before the read ends.
            assert_eq!(
                decide(ONLY_ANY, bytes, false),
                found(service, version),
                "{text}"
            );
            // Cut anywhere before its end, it is not decided yet (or, for a line whose end
            // is all that is missing, the same once the server says no more).
            for cut in 0..bytes.len() - 1 {
                let part = &bytes[..cut];
                match decide(ONLY_ANY, part, false) {
                    None => {}
                    other => panic!("{text:?} cut at {cut}: {other:?}"),
                }
            }
        }
    }

    /// The rules, the bytes, and the service and version they must find.
    type Case = (
        &'static [RuleFn],
        &'static [u8],
        Service,
        Option<&'static str>,
    );

    #[test]
    fn replies_captured_from_real_servers_name_their_service() {
        let cases: [Case; 6] = [
            (ANY, captured!("redis-ping.bin"), Service::Redis, None),
            (ANY, captured!("redis-noauth.bin"), Service::Redis, None),
            (
                ANY,
                captured!("nginx.bin"),
                Service::Http,
                Some("nginx/1.22.1"),
            ),
            (
                ANY,
                captured!("nginx-ping.bin"),
                Service::Http,
                Some("nginx/1.22.1"),
            ),
            (
                SSL_REQUEST,
                captured!("postgresql-ssl.bin"),
                Service::Postgresql,
                None,
            ),
            (
                SSL_REQUEST,
                captured!("postgresql-nossl.bin"),
                Service::Postgresql,
                None,
            ),
        ];
        for (rules, bytes, service, version) in cases {
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(
                decide(rules, bytes, true),
                found(service, version),
                "{text}"
            );
        }
        // A one-byte answer is PostgreSQL's only in reply to the SSLRequest.
        assert_eq!(decide(ONLY_ANY, b"N", true), Some(Verdict::NoMatch));
    }

    #[test]
    fn a_plain_request_to_a_tls_port_points_at_tls() {
        let bytes = captured!("nginx-plain-to-tls.bin");
        // The body says why; it is read to its end.
        assert_eq!(decide(ONLY_ANY, bytes, false), None);
        assert_eq!(decide(ONLY_ANY, bytes, true), Some(Verdict::WantsTls));
    }

    #[test]
    fn smtp_and_ftp_greetings_are_told_apart_by_their_text() {
        assert_eq!(
            decide(
                ANY,
                b"220 mail.example ESMTP Postfix (Debian/GNU)\r\n",
                false
            ),
            found(Service::Smtp, None)
        );
        assert_eq!(
            decide(
                ANY,
                b"220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n",
                false
            ),
            found(Service::Ftp, None)
        );
        let pure_ftpd = b"220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------\r\n220-You are user number 1 of 50 allowed.\r\n220 This is a private system.\r\n";
        assert_eq!(
            decide(ONLY_ANY, pure_ftpd, false),
            found(Service::Ftp, None)
        );
        // A multi-line greeting is read to its last line.
        assert_eq!(decide(ONLY_ANY, b"220-mail.example ESMTP\r\n", false), None);
        assert_eq!(
            decide(ONLY_ANY, b"220 host ready\r\n", false),
            Some(Verdict::Ambiguous220)
        );
    }

    #[test]
    fn a_foreign_or_malformed_greeting_matches_nothing() {
        for bytes in [
            &b"HELLO\r\n"[..],
            b"SSH-x.y-z\r\n",
            b"SSH-2.0\r\n",
            b"2200 what\r\n",
            b"+OKAY\r\n" as &[u8],
            b"HTTP/x 200 OK\r\n\r\n",
            b"\x05\x00\x00\x00\x0a1.0\x00",
        ] {
            assert_eq!(
                decide(ONLY_ANY, bytes, true),
                Some(Verdict::NoMatch),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(decide(ONLY_ANY, b"", false), None);
        assert_eq!(
            decide(ONLY_ANY, b"SSH-2.0-Open", true),
            found(Service::Ssh, Some("Open"))
        );
    }

    #[test]
    fn versions_are_short_and_plain_or_left_out() {
        let long = format!("SSH-2.0-{}\r\n", "x".repeat(MAX_VERSION + 1));
        assert_eq!(
            decide(ONLY_ANY, long.as_bytes(), false),
            found(Service::Ssh, None)
        );
        let odd = b"HTTP/1.1 200 OK\r\nServer: a \"quoted\" one\r\n\r\n";
        assert_eq!(decide(ONLY_ANY, odd, false), found(Service::Http, None));
    }
}
