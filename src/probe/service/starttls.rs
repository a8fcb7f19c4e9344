//! STARTTLS: the commands that turn a plain connection into TLS, on a connection that has
//! just been greeted. SMTP (`EHLO`, then `STARTTLS` when the reply offers it), IMAP
//! (`a1 STARTTLS`), POP3 (`STLS`) and PostgreSQL (the SSLRequest, answered `S`).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::io::exchange;
use super::probes::SSL_REQUEST;
use super::reason_of;
use crate::domain::{Reason, Service};

/// What the server said to the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The next bytes are the TLS handshake.
    Ready,
    /// The server does not offer TLS (or refused it).
    NotOffered,
    /// The dialogue broke off: the budget ran out, or the server closed.
    Failed(Reason),
}

/// The name the `EHLO` gives.
const EHLO: &[u8] = b"EHLO port-exporter.invalid\r\n";

/// Whether `service` has an upgrade this module speaks.
pub fn speaks(service: Service) -> bool {
    matches!(
        service,
        Service::Smtp | Service::Imap | Service::Pop3 | Service::Postgresql
    )
}

/// Asks `service` on `stream` (greeted, nothing else sent) to start TLS; each reply waited
/// for until the `until()` of the moment it is asked.
pub async fn upgrade<S>(service: Service, stream: &mut S, until: impl Fn() -> Instant) -> Upgrade
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match service {
        Service::Smtp => match ehlo(stream, until()).await {
            Ehlo::Accepted { starttls: true } => smtp_starttls(stream, until()).await,
            Ehlo::Accepted { starttls: false } | Ehlo::Refused => Upgrade::NotOffered,
            Ehlo::Failed(reason) => Upgrade::Failed(reason),
        },
        Service::Imap => {
            command(stream, b"a1 STARTTLS\r\n", until(), |line| {
                line.starts_with(b"a1 OK")
            })
            .await
        }
        Service::Pop3 => {
            command(stream, b"STLS\r\n", until(), |line| {
                line.starts_with(b"+OK")
            })
            .await
        }
        Service::Postgresql => {
            let reply = exchange(stream, &SSL_REQUEST, until(), |bytes, _| {
                bytes.first().map(|&b| b == b'S')
            })
            .await;
            match reply.answer {
                Some(true) => Upgrade::Ready,
                Some(false) => Upgrade::NotOffered,
                None => Upgrade::Failed(reason_of(reply.ended, &reply.bytes)),
            }
        }
        _ => Upgrade::NotOffered,
    }
}

/// SMTP's `STARTTLS`, after an `EHLO` whose reply offered it.
pub async fn smtp_starttls<S>(stream: &mut S, until: Instant) -> Upgrade
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    command(stream, b"STARTTLS\r\n", until, |line| {
        line.starts_with(b"220")
    })
    .await
}

/// What an SMTP server said to `EHLO`.
#[derive(Debug, PartialEq, Eq)]
pub enum Ehlo {
    /// `250`, offering STARTTLS or not.
    Accepted {
        starttls: bool,
    },
    /// Another code: not an SMTP server that takes `EHLO` (an FTP server says `500`).
    Refused,
    Failed(Reason),
}

/// Sends `EHLO` and reads its (multi-line) reply.
pub async fn ehlo<S>(stream: &mut S, until: Instant) -> Ehlo
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = exchange(stream, EHLO, until, |bytes, _| smtp_reply(bytes)).await;
    match reply.answer {
        Some((250, starttls)) => Ehlo::Accepted { starttls },
        Some(_) => Ehlo::Refused,
        None => Ehlo::Failed(reason_of(reply.ended, &reply.bytes)),
    }
}

/// A complete SMTP reply (`250-...` lines, then `250 ...`): its code, and whether a line
/// offers STARTTLS.
pub fn smtp_reply(bytes: &[u8]) -> Option<(u16, bool)> {
    let mut starttls = false;
    for line in complete_lines(bytes) {
        let code = std::str::from_utf8(line.get(..3)?)
            .ok()?
            .parse::<u16>()
            .ok()?;
        let text = line.get(4..).unwrap_or_default();
        starttls |= text.eq_ignore_ascii_case(b"STARTTLS");
        if line.get(3).is_none_or(|&b| b == b' ') {
            return Some((code, starttls));
        }
    }
    None
}

/// Sends `command` and reads lines until one that `tagged` is about: the IMAP tag's, or
/// (SMTP, POP3) the first.
async fn command<S>(
    stream: &mut S,
    command: &[u8],
    until: Instant,
    accepted: impl Fn(&[u8]) -> bool,
) -> Upgrade
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let imap = command.starts_with(b"a1 ");
    let reply = exchange(stream, command, until, |bytes, _| {
        complete_lines(bytes)
            .find(|line| !imap || line.starts_with(b"a1 "))
            .map(&accepted)
    })
    .await;
    match reply.answer {
        Some(true) => Upgrade::Ready,
        Some(false) => Upgrade::NotOffered,
        None => Upgrade::Failed(reason_of(reply.ended, &reply.bytes)),
    }
}

/// The complete lines of `bytes`, without their line ends.
fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    bytes[..complete]
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_replies_are_read_to_their_last_line() {
        assert_eq!(
            smtp_reply(b"250-mail.example\r\n250-SIZE 52428800\r\n"),
            None
        );
        assert_eq!(
            smtp_reply(b"250-mail.example\r\n250-STARTTLS\r\n250 HELP\r\n"),
            Some((250, true))
        );
        assert_eq!(smtp_reply(b"250 mail.example\r\n"), Some((250, false)));
        assert_eq!(
            smtp_reply(b"500 5.5.1 Unknown command\r\n"),
            Some((500, false))
        );
        assert_eq!(smtp_reply(b"not smtp\r\n"), None);
    }
}
