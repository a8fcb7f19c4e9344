//! The datagram each well-known UDP port is sent: a standard, harmless request its service
//! answers, as nmap's `nmap-payloads` has them. UDP has no handshake, so a service that gets a
//! datagram it does not understand usually stays silent and its port reads `open|filtered`;
//! the right request turns that into `open`.
//!
//! Every request only asks (a query, a status, a search); none changes what the server
//! holds, writes or serves. Each is built here from its protocol's fields (not copied bytes)
//! and is small (under 512 bytes: one packet on any path). A service answers it when it runs
//! with its usual settings, SNMP only where the community is `public` (the exposure worth
//! finding); anything else stays silent, as it would to nmap. Every other port gets an empty
//! datagram, which still draws ICMP port unreachable where nothing listens.
//!
//! | port | service | request |
//! |---|---|---|
//! | 53 | DNS | a query for the root's name servers (`. IN NS`), no recursion asked |
//! | 123 | NTP | a client request (mode 3, version 4) |
//! | 137 | NetBIOS name service | a node status request for `*` |
//! | 161 | SNMP | a v2c get of `sysDescr.0` with community `public` |
//! | 500 | IKE | an IKEv2 `IKE_SA_INIT` request offering common proposals |
//! | 514 | syslog | none: syslog never answers, an empty datagram only tells closed apart |
//! | 1900 | SSDP | an `M-SEARCH` for every device (`ssdp:all`) |
//! | 11211 | memcached | `stats` in the UDP frame |

use std::sync::LazyLock;

/// A request for one well-known port.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload {
    pub port: u16,
    /// The service, as IANA names the port.
    pub service: &'static str,
    /// What the request asks.
    pub request: &'static str,
    /// Whether the service answers: false where none ever does (syslog), so that its open
    /// port reads `open|filtered` whatever is sent.
    pub answers: bool,
    pub bytes: Vec<u8>,
}

/// Every payload, by port.
pub fn table() -> &'static [Payload] {
    static TABLE: LazyLock<Vec<Payload>> = LazyLock::new(|| {
        vec![
            payload(53, "domain", "query . IN NS", dns_root_ns()),
            payload(123, "ntp", "client request, mode 3", ntp_client()),
            payload(137, "netbios-ns", "node status of *", netbios_node_status()),
            payload(
                161,
                "snmp",
                "v2c get sysDescr.0, public",
                snmp_get_sys_descr(),
            ),
            payload(500, "isakmp", "IKEv2 IKE_SA_INIT", ike_sa_init()),
            Payload {
                answers: false,
                ..payload(514, "syslog", "none (never answers)", Vec::new())
            },
            payload(1900, "ssdp", "M-SEARCH ssdp:all", ssdp_search()),
            payload(11211, "memcache", "stats", memcached_stats()),
        ]
    });
    &TABLE
}

/// The datagram a probe of `port` sends: its service's request, or an empty one.
pub fn for_port(port: u16) -> &'static [u8] {
    table()
        .iter()
        .find(|p| p.port == port)
        .map_or(&[], |p| &p.bytes)
}

fn payload(port: u16, service: &'static str, request: &'static str, bytes: Vec<u8>) -> Payload {
    Payload {
        port,
        service,
        request,
        answers: true,
        bytes,
    }
}

/// The transaction ids of our requests ("pe"), so a capture shows whose they are.
const ID: u16 = 0x7065;

/// DNS (RFC 1035): a header with one question, `. IN NS`, and recursion not desired, so a
/// resolver answers from what it has (or refuses) instead of asking the root for us.
fn dns_root_ns() -> Vec<u8> {
    let mut query = Vec::with_capacity(17);
    query.extend(ID.to_be_bytes());
    // QR 0 (query), opcode 0, RD 0; one question, no other records.
    query.extend([0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    query.push(0); // the root: an empty name
    query.extend(2u16.to_be_bytes()); // QTYPE NS
    query.extend(1u16.to_be_bytes()); // QCLASS IN
    query
}

/// NTP (RFC 5905): a 48-byte client packet, leap 0, version 4, mode 3, with a transmit time
/// (some servers ignore a request whose transmit time is zero). Any server answers it.
fn ntp_client() -> Vec<u8> {
    let mut packet = vec![0u8; 48];
    packet[0] = (4 << 3) | 3; // LI 0, VN 4, mode 3 (client)
    packet[2] = 6; // poll: 64 s
    packet[3] = 0xEC; // precision: 2^-20 s
    // Transmit timestamp (NTP era 0 seconds, fraction): a fixed time, 2024-01-01.
    packet[40..44].copy_from_slice(&0xE93C_7F00u32.to_be_bytes());
    packet
}

/// NetBIOS name service (RFC 1002 4.2.17): a node status request (NBSTAT) for the wildcard
/// name `*`, which a NetBIOS node answers with its name table.
fn netbios_node_status() -> Vec<u8> {
    let mut request = Vec::with_capacity(50);
    request.extend(ID.to_be_bytes());
    // Flags 0 (a unicast query); one question.
    request.extend([0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let mut name = [0u8; 16];
    name[0] = b'*';
    request.push(32);
    request.extend(netbios_encode(&name));
    request.push(0);
    request.extend(0x0021u16.to_be_bytes()); // NBSTAT
    request.extend(1u16.to_be_bytes()); // IN
    request
}

/// NetBIOS "first-level encoding" (RFC 1001 14.1): each half-byte as a letter from `A`.
fn netbios_encode(name: &[u8; 16]) -> Vec<u8> {
    name.iter()
        .flat_map(|byte| [b'A' + (byte >> 4), b'A' + (byte & 0x0F)])
        .collect()
}

/// SNMP v2c (RFC 3416) GetRequest of sysDescr.0 (1.3.6.1.2.1.1.1.0), community `public`, in
/// BER: only a read, and an agent whose community differs stays silent.
fn snmp_get_sys_descr() -> Vec<u8> {
    let varbind = ber::sequence(&[ber::oid(&[1, 3, 6, 1, 2, 1, 1, 1, 0]), ber::null()]);
    let pdu = ber::tlv(
        ber::GET_REQUEST,
        &[
            ber::integer(i64::from(ID)),
            ber::integer(0), // error-status
            ber::integer(0), // error-index
            ber::sequence(&[varbind]),
        ]
        .concat(),
    );
    ber::sequence(&[
        ber::integer(1), // version: 1 is v2c
        ber::octet_string(b"public"),
        pdu,
    ])
}

/// The little of BER (X.690) that an SNMP request needs: definite lengths, one-byte tags.
mod ber {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// SNMP's GetRequest-PDU: context-specific, constructed, 0.
    pub const GET_REQUEST: u8 = 0xA0;

    /// A tag, the content's length (short form below 128, else long form) and the content.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend(&bytes[skip..]);
        }
        out.extend(content);
        out
    }

    /// Two's complement, big-endian, in the fewest bytes that keep the sign.
    pub fn integer(value: i64) -> Vec<u8> {
        let bytes = value.to_be_bytes();
        let mut start = 0;
        while start < 7 {
            let (first, next) = (bytes[start], bytes[start + 1]);
            let redundant =
                (first == 0x00 && next & 0x80 == 0) || (first == 0xFF && next & 0x80 != 0);
            if !redundant {
                break;
            }
            start += 1;
        }
        tlv(INTEGER, &bytes[start..])
    }

    pub fn octet_string(value: &[u8]) -> Vec<u8> {
        tlv(OCTET_STRING, value)
    }

    pub fn null() -> Vec<u8> {
        tlv(NULL, &[])
    }

    /// The first two arcs as one (40 x a + b), then each arc in base 128, high bit "more".
    pub fn oid(arcs: &[u32]) -> Vec<u8> {
        let mut content = Vec::new();
        let first = arcs[0] * 40 + arcs[1];
        for arc in std::iter::once(first).chain(arcs[2..].iter().copied()) {
            let mut groups = vec![(arc & 0x7F) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                groups.push(0x80 | (rest & 0x7F) as u8);
                rest >>= 7;
            }
            content.extend(groups.iter().rev());
        }
        tlv(OID, &content)
    }

    pub fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(SEQUENCE, &items.concat())
    }
}

/// IKEv2 (RFC 7296) IKE_SA_INIT request: an SA payload with one proposal of common transforms,
/// a key exchange for its Diffie-Hellman group 14 and a nonce. A responder answers it with its
/// own IKE_SA_INIT, or with a notify (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, COOKIE); an
/// IKEv1-only one with INVALID_MAJOR_VERSION or silence. Like a TCP SYN it leaves at most a
/// half-open exchange that the responder drops after its timeout.
fn ike_sa_init() -> Vec<u8> {
    const SA: u8 = 33;
    const KE: u8 = 34;
    const NONCE: u8 = 40;
    const DH_GROUP: u16 = 14; // 2048-bit MODP
    // (type, id, key length): ENCR 1, PRF 2, INTEG 3, D-H 4.
    let transforms: [(u8, u16, Option<u16>); 8] = [
        (1, 12, Some(256)), // AES-CBC-256
        (1, 12, Some(128)), // AES-CBC-128
        (2, 5, None),       // PRF_HMAC_SHA2_256
        (2, 2, None),       // PRF_HMAC_SHA1
        (3, 12, None),      // AUTH_HMAC_SHA2_256_128
        (3, 2, None),       // AUTH_HMAC_SHA1_96
        (4, DH_GROUP, None),
        (4, 2, None), // 1024-bit MODP
    ];
    let mut proposal = vec![1, 1, 0, transforms.len() as u8]; // number 1, IKE, no SPI
    for (i, (kind, id, key_length)) in transforms.iter().enumerate() {
        let last = i + 1 == transforms.len();
        let attributes = key_length.map_or(Vec::new(), |bits| {
            [0x800Eu16.to_be_bytes(), bits.to_be_bytes()].concat() // TV: key length
        });
        proposal.extend([if last { 0 } else { 3 }, 0]);
        proposal.extend((8 + attributes.len() as u16).to_be_bytes());
        proposal.extend([*kind, 0]);
        proposal.extend(id.to_be_bytes());
        proposal.extend(attributes);
    }
    let proposal = [
        vec![0, 0], // last proposal
        (4 + proposal.len() as u16).to_be_bytes().to_vec(),
        proposal,
    ]
    .concat();
    // A public value below the group's prime (its top bytes are all ones) and above 1.
    let key_exchange = [DH_GROUP.to_be_bytes().to_vec(), vec![0, 0], vec![0x5A; 256]].concat();
    let nonce = vec![0xA5; 32];
    let payloads = [
        ike_payload(KE, &proposal),
        ike_payload(NONCE, &key_exchange),
        ike_payload(0, &nonce),
    ]
    .concat();
    let mut message = Vec::with_capacity(28 + payloads.len());
    message.extend(0x7065_7870_726f_6265u64.to_be_bytes()); // initiator SPI: "pexprobe"
    message.extend([0; 8]); // responder SPI: none yet
    message.extend([SA, 0x20, 34, 0x08]); // first payload SA, version 2.0, IKE_SA_INIT, initiator
    message.extend(0u32.to_be_bytes()); // message id
    message.extend((28 + payloads.len() as u32).to_be_bytes());
    message.extend(payloads);
    message
}

/// An IKEv2 payload: the next payload's type, not critical, the length, the body.
fn ike_payload(next: u8, body: &[u8]) -> Vec<u8> {
    [
        vec![next, 0],
        (4 + body.len() as u16).to_be_bytes().to_vec(),
        body.to_vec(),
    ]
    .concat()
}

/// SSDP (UPnP Device Architecture): a search for every device and service. Unicast, so no
/// `MX` (a device would wait up to MX seconds to spread multicast answers).
fn ssdp_search() -> Vec<u8> {
    [
        "M-SEARCH * HTTP/1.1",
        "HOST: 239.255.255.250:1900",
        "MAN: \"ssdp:discover\"",
        "ST: ssdp:all",
        "",
        "",
    ]
    .join("\r\n")
    .into_bytes()
}

/// memcached's UDP protocol: the 8-byte frame header (request id, datagram 0 of 1, reserved)
/// and the `stats` command, which reads counters only. (memcached has UDP off by default
/// since 1.5.6; one that answers is an amplifier worth knowing about.)
fn memcached_stats() -> Vec<u8> {
    let mut frame = Vec::with_capacity(15);
    frame.extend(ID.to_be_bytes());
    frame.extend(0u16.to_be_bytes()); // sequence number
    frame.extend(1u16.to_be_bytes()); // datagrams in the message
    frame.extend(0u16.to_be_bytes()); // reserved
    frame.extend(b"stats\r\n");
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([bytes[at], bytes[at + 1]])
    }

    fn entry(port: u16) -> &'static Payload {
        table().iter().find(|p| p.port == port).unwrap()
    }

    #[test]
    fn one_entry_a_port_small_and_only_syslog_silent() {
        let mut ports: Vec<u16> = table().iter().map(|p| p.port).collect();
        ports.dedup();
        assert_eq!(ports.len(), table().len(), "sorted, one entry a port");
        for p in table() {
            assert!(
                p.bytes.len() < 512,
                "{} is {} bytes",
                p.service,
                p.bytes.len()
            );
            assert_eq!(p.answers, !p.bytes.is_empty(), "{}", p.service);
            assert_eq!(for_port(p.port), p.bytes.as_slice());
        }
        assert!(!entry(514).answers);
        assert_eq!(for_port(9), b"");
        assert_eq!(for_port(54), b"");
    }

    #[test]
    fn the_dns_query_parses_back_as_one_question_for_the_root_ns() {
        let q = for_port(53);
        assert_eq!(q.len(), 17);
        assert_eq!(u16_at(q, 0), ID);
        let flags = u16_at(q, 2);
        assert_eq!(flags & 0x8000, 0, "a query");
        assert_eq!((flags >> 11) & 0xF, 0, "opcode QUERY");
        assert_eq!(flags & 0x0100, 0, "no recursion asked");
        let counts: Vec<u16> = (0..4).map(|i| u16_at(q, 4 + 2 * i)).collect();
        assert_eq!(counts, [1, 0, 0, 0]);
        // The name: labels up to the empty one; the root has none.
        let mut at = 12;
        let mut labels = Vec::new();
        while q[at] != 0 {
            let len = usize::from(q[at]);
            labels.push(&q[at + 1..at + 1 + len]);
            at += 1 + len;
        }
        assert!(labels.is_empty());
        assert_eq!((u16_at(q, at + 1), u16_at(q, at + 3)), (2, 1), "NS, IN");
        assert_eq!(at + 5, q.len());
    }

    #[test]
    fn the_ntp_request_is_a_version_4_client_packet() {
        let p = for_port(123);
        assert_eq!(p.len(), 48);
        assert_eq!((p[0] >> 6, (p[0] >> 3) & 7, p[0] & 7), (0, 4, 3));
        assert!(p[40..48].iter().any(|b| *b != 0), "a transmit time");
        assert!(
            p[4..40].iter().all(|b| *b == 0),
            "nothing claimed but the time"
        );
    }

    #[test]
    fn the_netbios_request_asks_the_node_status_of_the_wildcard() {
        let r = for_port(137);
        assert_eq!(r.len(), 50);
        assert_eq!(u16_at(r, 0), ID);
        assert_eq!(u16_at(r, 2), 0, "a unicast query");
        assert_eq!(u16_at(r, 4), 1);
        assert_eq!(r[12], 32);
        let decoded: Vec<u8> = r[13..45]
            .chunks(2)
            .map(|pair| ((pair[0] - b'A') << 4) | (pair[1] - b'A'))
            .collect();
        assert_eq!(decoded, b"*\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(r[45], 0);
        assert_eq!((u16_at(r, 46), u16_at(r, 48)), (0x21, 1), "NBSTAT, IN");
    }

    /// A BER element: tag and content, and what follows it.
    fn element(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = bytes[0];
        let (len, header) = match bytes[1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let n = usize::from(long & 0x7F);
                let len = bytes[2..2 + n]
                    .iter()
                    .fold(0, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + n)
            }
        };
        (tag, &bytes[header..header + len], &bytes[header + len..])
    }

    fn elements(mut bytes: &[u8]) -> Vec<(u8, &[u8])> {
        let mut all = Vec::new();
        while !bytes.is_empty() {
            let (tag, content, rest) = element(bytes);
            all.push((tag, content));
            bytes = rest;
        }
        all
    }

    #[test]
    fn the_snmp_request_is_a_v2c_get_of_sys_descr_with_public() {
        let (tag, message, rest) = element(for_port(161));
        assert_eq!((tag, rest), (ber::SEQUENCE, &[][..]));
        let message = elements(message);
        assert_eq!(message[0], (ber::INTEGER, &[1][..]), "v2c");
        assert_eq!(message[1], (ber::OCTET_STRING, &b"public"[..]));
        assert_eq!(message[2].0, ber::GET_REQUEST);
        let pdu = elements(message[2].1);
        assert_eq!(pdu[0], (ber::INTEGER, &ID.to_be_bytes()[..]));
        assert_eq!(&pdu[1..3], [(ber::INTEGER, &[0][..]); 2]);
        let bindings = elements(pdu[3].1);
        assert_eq!((pdu[3].0, bindings.len()), (ber::SEQUENCE, 1));
        let binding = elements(bindings[0].1);
        assert_eq!(
            binding,
            [
                (ber::OID, &[0x2B, 6, 1, 2, 1, 1, 1, 0][..]),
                (ber::NULL, &[][..])
            ]
        );
    }

    #[test]
    fn ber_lengths_integers_and_arcs() {
        assert_eq!(ber::tlv(4, &[7; 3]), [4, 3, 7, 7, 7]);
        assert_eq!(&ber::tlv(4, &[0; 200])[..3], [4, 0x81, 200]);
        assert_eq!(&ber::tlv(4, &[0; 300])[..4], [4, 0x82, 1, 44]);
        assert_eq!(ber::integer(0), [2, 1, 0]);
        assert_eq!(ber::integer(127), [2, 1, 127]);
        assert_eq!(ber::integer(128), [2, 2, 0, 128]);
        assert_eq!(ber::integer(-1), [2, 1, 0xFF]);
        assert_eq!(ber::integer(-129), [2, 2, 0xFF, 0x7F]);
        // 1.3.6.1.4.1.311: 311 takes two groups.
        assert_eq!(
            ber::oid(&[1, 3, 6, 1, 4, 1, 311]),
            [6, 7, 0x2B, 6, 1, 4, 1, 0x82, 0x37]
        );
    }

    #[test]
    fn the_ike_request_is_a_well_formed_ike_sa_init() {
        let m = for_port(500);
        assert_eq!(
            u32::from_be_bytes(m[24..28].try_into().unwrap()) as usize,
            m.len()
        );
        assert!(m[..8].iter().any(|b| *b != 0), "an initiator SPI");
        assert_eq!(m[8..16], [0; 8], "no responder SPI");
        assert_eq!(m[17], 0x20, "version 2.0");
        assert_eq!(m[18], 34, "IKE_SA_INIT");
        assert_eq!(m[19], 0x08, "from the initiator");
        // Walk the payload chain: each length covers its payload, and the chain ends the
        // message.
        let mut next = m[16];
        let mut at = 28;
        let mut chain = Vec::new();
        let mut bodies = Vec::new();
        while next != 0 {
            chain.push(next);
            let len = usize::from(u16_at(m, at + 2));
            bodies.push(&m[at + 4..at + len]);
            next = m[at];
            at += len;
        }
        assert_eq!(at, m.len());
        assert_eq!(chain, [33, 34, 40], "SA, KE, nonce");
        // The proposal: the last one, IKE, its transforms' lengths add up, one of its D-H
        // groups is the key exchange's.
        let proposal = bodies[0];
        assert_eq!(proposal[0], 0);
        assert_eq!(usize::from(u16_at(proposal, 2)), proposal.len());
        assert_eq!(proposal[5], 1, "protocol IKE");
        let count = usize::from(proposal[7]);
        let mut at = 8;
        let mut groups = Vec::new();
        for i in 0..count {
            let transform = &proposal[at..];
            assert_eq!(transform[0], if i + 1 == count { 0 } else { 3 });
            if transform[4] == 4 {
                groups.push(u16_at(transform, 6));
            }
            at += usize::from(u16_at(transform, 2));
        }
        assert_eq!(at, proposal.len());
        let ke = bodies[1];
        assert!(groups.contains(&u16_at(ke, 0)), "{groups:?}");
        assert_eq!(ke.len() - 4, 256, "a 2048-bit public value");
        assert!((16..=256).contains(&bodies[2].len()), "nonce size");
    }

    #[test]
    fn the_ssdp_search_is_an_http_request_head() {
        let text = String::from_utf8(for_port(1900).to_vec()).unwrap();
        assert!(text.starts_with("M-SEARCH * HTTP/1.1\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let head = text.trim_end_matches("\r\n");
        let fields: Vec<&str> = head.split("\r\n").skip(1).collect();
        assert!(fields.contains(&"MAN: \"ssdp:discover\""));
        assert!(fields.iter().all(|f| f.contains(": ")), "{fields:?}");
        assert!(
            !text.replace("\r\n", "").contains('\n'),
            "CRLF line ends only"
        );
    }

    #[test]
    fn the_memcached_request_is_one_framed_stats() {
        let frame = for_port(11211);
        let header: Vec<u16> = (0..4).map(|i| u16_at(frame, 2 * i)).collect();
        assert_eq!(header, [ID, 0, 1, 0]);
        assert_eq!(&frame[8..], b"stats\r\n");
    }
}
