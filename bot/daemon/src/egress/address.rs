//! Which addresses are off limits to the egress proxy unless the allowlist names them: the
//! host itself, private and shared networks, link-local (cloud metadata services live at
//! `169.254.169.254` and `fd00:ec2::254`), multicast, unspecified and reserved space. Pure: the
//! proxy classifies every address a name resolved to before it connects, so an allowlisted
//! name whose record points inside (DNS rebinding, a typo, a hostile zone) leads nowhere.
//!
//! Like Stripe's smokescreen, an IPv6 address that stands for an IPv4 one (v4-mapped,
//! v4-compatible, NAT64, 6to4) is judged by the IPv4 address it carries: the kernel connects
//! `::ffff:127.0.0.1` to the host's loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Why an address is refused unless the allowlist names it (or a range holding it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    /// `0.0.0.0/8`, `::`: Linux connects them to the host itself.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and IPv6 unique local (`fc00::/7`).
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT: the provider's side of the network.
    SharedAddressSpace,
    /// `169.254.0.0/16` (cloud metadata) and `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Protocol assignments, benchmarking, documentation and other space that is not a
    /// destination on the internet.
    Reserved,
}

impl Restricted {
    /// The address's kind, for the refusal the agent and the thread see.
    pub fn describe(self) -> &'static str {
        match self {
            Restricted::Unspecified => "an unspecified address (the host itself)",
            Restricted::Loopback => "a loopback address (the host itself)",
            Restricted::Private => "a private network address",
            Restricted::SharedAddressSpace => "a carrier-grade NAT address",
            Restricted::LinkLocal => "a link-local address (cloud metadata lives there)",
            Restricted::Multicast => "a multicast address",
            Restricted::Broadcast => "the broadcast address",
            Restricted::Reserved => "a reserved address",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// IANA's IPv4 special-purpose registry, minus what is globally reachable.
const V4_RANGES: &[(Ipv4Net, Restricted)] = &[
    (v4(0, 0, 0, 0, 8), Restricted::Unspecified),
    (v4(10, 0, 0, 0, 8), Restricted::Private),
    (v4(100, 64, 0, 0, 10), Restricted::SharedAddressSpace),
    (v4(127, 0, 0, 0, 8), Restricted::Loopback),
    (v4(169, 254, 0, 0, 16), Restricted::LinkLocal),
    (v4(172, 16, 0, 0, 12), Restricted::Private),
    (v4(192, 0, 0, 0, 24), Restricted::Reserved),
    (v4(192, 0, 2, 0, 24), Restricted::Reserved),
    (v4(192, 168, 0, 0, 16), Restricted::Private),
    (v4(198, 18, 0, 0, 15), Restricted::Reserved),
    (v4(198, 51, 100, 0, 24), Restricted::Reserved),
    (v4(203, 0, 113, 0, 24), Restricted::Reserved),
    (v4(224, 0, 0, 0, 4), Restricted::Multicast),
    (v4(255, 255, 255, 255, 32), Restricted::Broadcast),
    (v4(240, 0, 0, 0, 4), Restricted::Reserved),
];

/// IANA's IPv6 special-purpose registry, minus what is globally reachable; the prefixes that
/// embed an IPv4 address are handled by [`embedded_v4`] first.
const V6_RANGES: &[(Ipv6Net, Restricted)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Restricted::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Restricted::Loopback),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        Restricted::Private,
    ),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Restricted::Reserved),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Restricted::Reserved),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Restricted::Reserved,
    ),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Restricted::Reserved),
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), Restricted::Reserved),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Restricted::Private),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Restricted::LinkLocal),
    // Site-local: deprecated, still routed inside some networks.
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Restricted::Private),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Restricted::Multicast),
];

/// The IPv4 address an IPv6 one is a stand-in for: v4-mapped `::ffff:a.b.c.d`, v4-compatible
/// `::a.b.c.d` (not `::` and `::1`), NAT64's well-known `64:ff9b::a.b.c.d` and 6to4's
/// `2002:AABB:CCDD::/48`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4_of = |high: u16, low: u16| {
        let ([a, b], [c, d]) = (high.to_be_bytes(), low.to_be_bytes());
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, high, low] => Some(v4_of(high, low)),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, high, low] => Some(v4_of(high, low)),
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(v4_of(high, low)),
        [0x2002, high, low, ..] => Some(v4_of(high, low)),
        _ => None,
    }
}

/// Why `ip` is off limits, or `None` for an address on the internet.
pub fn classify(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => V6_RANGES
                .iter()
                .find(|(net, _)| net.contains(&v6))
                .map(|(_, class)| *class),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Restricted> {
    V4_RANGES
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, class)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(address: &str, want: Option<Restricted>) {
        let ip: IpAddr = address.parse().expect(address);
        assert_eq!(classify(ip), want, "{address}");
    }

    #[test]
    fn classification_table() {
        use Restricted::*;
        let cases = [
            // On the internet.
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            // The host itself.
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            // IPv6 spellings of IPv4 addresses are judged as those.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:0808:0808::1", None),
            // Private networks.
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd00:ec2::254", Some(Private)),
            ("64:ff9b:1::1", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            // Link-local and cloud metadata.
            ("169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            // Multicast, broadcast and reserved space.
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.2.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("2001:db8::1", Some(Reserved)),
            ("2001::1", Some(Reserved)),
        ];
        for (address, want) in cases {
            check(address, want);
        }
    }
}
