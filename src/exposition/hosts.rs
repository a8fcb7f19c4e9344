//! The per-address timing families: what adaptive timing learned of each address, per
//! protocol (TCP and UDP probes learn on tables of their own). Written
//! with the table (and cached with it): one line per address and family, 60,000 lines for
//! 10,000 addresses, too many to write again for every scrape.

use bytes::BytesMut;

use crate::domain::Protocol;
use crate::families::{
    Family, HOST_DROP_RATIO, HOST_RETRANSMISSIONS, HOST_RETRIES, HOST_RTT, HOST_RTT_VARIATION,
    HOST_TIMEOUT,
};
use crate::probe::timing::AddressTiming;

use super::text::{Numbers, push_label, push_line};

/// A sample's value: a float, or a count written as an integer.
pub enum Value {
    Float(f64),
    Count(u64),
}

/// Each family with the value of an address's series; `None`: the address has no series.
pub type Column = (&'static Family, fn(&AddressTiming) -> Option<Value>);

/// The families, in the order they are written (the tail of the table's families).
pub const COLUMNS: [Column; 6] = [
    (&HOST_RTT, |a| {
        a.rtt.map(|(srtt, _)| Value::Float(srtt.as_secs_f64()))
    }),
    (&HOST_RTT_VARIATION, |a| {
        a.rtt.map(|(_, rttvar)| Value::Float(rttvar.as_secs_f64()))
    }),
    // Zero until a probe of the address started under adaptive timing.
    (&HOST_TIMEOUT, |a| {
        (!a.timeout.is_zero()).then_some(Value::Float(a.timeout.as_secs_f64()))
    }),
    (&HOST_DROP_RATIO, |a| Some(Value::Float(a.drop_ratio))),
    (&HOST_RETRIES, |a| Some(Value::Count(u64::from(a.retries)))),
    (&HOST_RETRANSMISSIONS, |a| {
        Some(Value::Count(a.retransmissions))
    }),
];

/// Writes the samples of every family of [`COLUMNS`] for `addresses` (each with the protocol
/// whose probes learned it), returning where each family's samples start in `out` (and, last,
/// where they end).
pub fn write_hosts(
    out: &mut BytesMut,
    addresses: &[(Protocol, AddressTiming)],
) -> [usize; COLUMNS.len() + 1] {
    let mut numbers = Numbers::default();
    let labels: Vec<String> = addresses
        .iter()
        .map(|(protocol, address)| {
            let mut labels = String::from("{");
            push_label(&mut labels, "protocol", protocol.as_str());
            labels.push(',');
            push_label(&mut labels, "ip", &address.ip.to_string());
            labels
        })
        .collect();
    let mut offsets = [0; COLUMNS.len() + 1];
    for (i, (family, value_of)) in COLUMNS.into_iter().enumerate() {
        offsets[i] = out.len();
        for ((_, address), labels) in addresses.iter().zip(&labels) {
            let text = match value_of(address) {
                Some(Value::Float(value)) => numbers.float(value),
                Some(Value::Count(count)) => numbers.int(count),
                None => continue,
            };
            push_line(out, family.name, labels, "} ", text);
        }
    }
    offsets[COLUMNS.len()] = out.len();
    offsets
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_address_has_its_series_per_protocol_and_unlearned_ones_no_rtt() {
        let learned = AddressTiming {
            ip: "::1".parse().unwrap(),
            rtt: Some((Duration::from_micros(250), Duration::from_micros(125))),
            drop_ratio: 0.25,
            timeout: Duration::from_millis(100),
            retries: 3,
            retransmissions: 7,
        };
        let silent = AddressTiming {
            ip: "198.18.0.1".parse().unwrap(),
            rtt: None,
            drop_ratio: 0.0,
            timeout: Duration::from_secs(2),
            retries: 1,
            retransmissions: 0,
        };
        let mut buffer = BytesMut::new();
        // One address learned by both protocols' probes: two series sets, told apart.
        let by_udp = AddressTiming {
            timeout: Duration::from_millis(400),
            ..learned
        };
        let addresses = [
            (Protocol::Tcp, learned),
            (Protocol::Udp, by_udp),
            (Protocol::Tcp, silent),
        ];
        let offsets = write_hosts(&mut buffer, &addresses);
        assert_eq!(offsets[0], 0);
        assert_eq!(offsets[COLUMNS.len()], buffer.len());
        let out = String::from_utf8(buffer.to_vec()).unwrap();
        for line in [
            "port_host_rtt_seconds{protocol=\"tcp\",ip=\"::1\"} 0.00025\n",
            "port_host_rtt_variation_seconds{protocol=\"tcp\",ip=\"::1\"} 0.000125\n",
            "port_host_timeout_seconds{protocol=\"tcp\",ip=\"::1\"} 0.1\n",
            "port_host_timeout_seconds{protocol=\"udp\",ip=\"::1\"} 0.4\n",
            "port_host_drop_ratio{protocol=\"tcp\",ip=\"::1\"} 0.25\n",
            "port_host_retries{protocol=\"tcp\",ip=\"::1\"} 3\n",
            "port_host_retransmissions_total{protocol=\"tcp\",ip=\"::1\"} 7\n",
            "port_host_retransmissions_total{protocol=\"udp\",ip=\"::1\"} 7\n",
            "port_host_timeout_seconds{protocol=\"tcp\",ip=\"198.18.0.1\"} 2.0\n",
            "port_host_retries{protocol=\"tcp\",ip=\"198.18.0.1\"} 1\n",
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
        assert!(!out.contains("ip=\"198.18.0.1\"}} 0.0"), "{out}");
        assert!(!out.contains("port_host_rtt_seconds{protocol=\"tcp\",ip=\"198.18.0.1\"}"));
    }

    #[test]
    fn the_columns_are_the_tail_of_the_table_families() {
        use crate::exposition::table::FAMILIES;
        let tail: Vec<&str> = FAMILIES[FAMILIES.len() - COLUMNS.len()..]
            .iter()
            .map(|f| f.name)
            .collect();
        let columns: Vec<&str> = COLUMNS.iter().map(|(f, _)| f.name).collect();
        assert_eq!(tail, columns);
    }
}
