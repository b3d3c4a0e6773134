//! The SSRF guard: a webhook may only reach the public internet.
//!
//! A URL's host is resolved and every address checked, and the connection then goes to a checked
//! address: the worker's HTTP client resolves through [`GuardedResolver`], which checks what it
//! returns, so a name that re-resolves to an internal address between the check and the connect
//! (DNS rebinding) is refused at connect time too. Hosts given as literal IPs never reach a
//! resolver, so [`check_target`] checks them itself.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use sqlx::types::ipnetwork::IpNetwork;
use url::{Host, Url};

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A host that resolves to an address webhooks may not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {address}, a {reason} address")]
pub struct TargetRefused {
    pub host: String,
    pub address: IpAddr,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    BadUrl(String),
    #[error("refused: {0}")]
    Refused(#[from] TargetRefused),
    #[error("{0} does not resolve")]
    Unresolvable(String),
}

impl TargetError {
    /// The guard's refusal somewhere in an HTTP client error's chain of causes, if that is what
    /// stopped the request.
    pub fn refusal_in<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e TargetRefused> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(TargetError::Refused(refused)) = error.downcast_ref::<TargetError>() {
                return Some(refused);
            }
            cause = error.source();
        }
        None
    }
}

/// Which addresses a guarded request may reach: public ones, and besides them every address
/// (tests, on-premise receivers) or only the internal networks listed (an image store on the
/// company network).
#[derive(Debug, Clone, Default)]
pub enum Reach {
    #[default]
    Public,
    Everything,
    PublicAnd(Arc<[IpNetwork]>),
}

impl From<bool> for Reach {
    /// Public addresses, or with `allow_private` every address.
    fn from(allow_private: bool) -> Self {
        match allow_private {
            true => Self::Everything,
            false => Self::Public,
        }
    }
}

impl Reach {
    /// Why `address` may not be reached, or `None` when it may.
    fn refuses(&self, address: IpAddr) -> Option<&'static str> {
        let reason = forbidden(address)?;
        match self {
            Self::Everything => None,
            Self::PublicAnd(networks) if networks.iter().any(|n| n.contains(address)) => None,
            Self::Public | Self::PublicAnd(_) => Some(reason),
        }
    }
}

/// Parses a webhook URL: absolute `http` or `https` with a host, without credentials.
pub fn parse_url(raw: &str) -> Result<Url, TargetError> {
    let bad = |why: &str| Err(TargetError::BadUrl(why.to_owned()));
    if raw.len() > MAX_URL_LEN {
        return bad("must be at most 2048 characters");
    }
    let Ok(url) = Url::parse(raw) else {
        return bad("is not an absolute URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("must be an http or https URL");
    }
    if url.host().is_none() {
        return bad("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry credentials: receivers authenticate by the signature");
    }
    Ok(url)
}

/// Resolves `url`'s host and checks every address it has (one bad address refuses the URL: the
/// connection could go to any of them). Private targets pass when `allow_private` is set.
pub async fn check_target(url: &Url, allow_private: bool) -> Result<(), TargetError> {
    check_target_within(url, &Reach::from(allow_private)).await
}

/// [`check_target`] for what `reach` allows.
pub async fn check_target_within(url: &Url, reach: &Reach) -> Result<(), TargetError> {
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        Some(Host::Ipv4(ip)) => check_address(&ip.to_string(), IpAddr::V4(ip), reach),
        Some(Host::Ipv6(ip)) => check_address(&ip.to_string(), IpAddr::V6(ip), reach),
        Some(Host::Domain(name)) => resolve(name, port, reach).await.map(drop),
        None => Err(TargetError::BadUrl("has no host".into())),
    }
}

fn check_address(host: &str, address: IpAddr, reach: &Reach) -> Result<(), TargetError> {
    match reach.refuses(address) {
        Some(reason) => Err(TargetError::Refused(TargetRefused {
            host: host.to_owned(),
            address,
            reason,
        })),
        None => Ok(()),
    }
}

async fn resolve(name: &str, port: u16, reach: &Reach) -> Result<Vec<SocketAddr>, TargetError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|_| TargetError::Unresolvable(name.to_owned()))?
        .collect();
    if addresses.is_empty() {
        return Err(TargetError::Unresolvable(name.to_owned()));
    }
    for address in &addresses {
        check_address(name, address.ip(), reach)?;
    }
    Ok(addresses)
}

/// The HTTP client's resolver for guarded requests (webhook deliveries, image fetches): it hands
/// the client only checked addresses.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    pub reach: Reach,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.reach.clone();
        Box::pin(async move {
            // The client sets the URL's port on what a resolver returns.
            let addresses = resolve(name.as_str(), 0, &reach)
                .await
                .map_err(|error| Box::new(error) as Box<dyn StdError + Send + Sync>)?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why `address` is no place for a webhook, or `None` for a public address.
pub fn forbidden(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// An address range a webhook may not reach, and why.
struct Range<T> {
    first: T,
    prefix: u8,
    reason: &'static str,
}

const fn v4(first: [u8; 4], prefix: u8, reason: &'static str) -> Range<u32> {
    Range {
        first: u32::from_be_bytes(first),
        prefix,
        reason,
    }
}

const fn v6(first: [u16; 8], prefix: u8, reason: &'static str) -> Range<u128> {
    let [a, b, c, d, e, f, g, h] = first;
    Range {
        first: Ipv6Addr::new(a, b, c, d, e, f, g, h).to_bits(),
        prefix,
        reason,
    }
}

/// The IANA IPv4 Special-Purpose Address Registry's ranges that are not globally reachable (with
/// the deprecated 6to4 relay anycast and the multicast block), and the cloud metadata address
/// first, for its own reason. A globally reachable exception inside a refused range (the anycast
/// addresses in 192.0.0.0/24) stays refused: no webhook receiver lives there.
const V4_REFUSED: &[Range<u32>] = &[
    v4([169, 254, 169, 254], 32, "cloud metadata"),
    v4([0, 0, 0, 0], 8, "unspecified"),
    v4([10, 0, 0, 0], 8, "private"),
    v4([100, 64, 0, 0], 10, "carrier-grade NAT"),
    v4([127, 0, 0, 0], 8, "loopback"),
    v4([169, 254, 0, 0], 16, "link-local"),
    v4([172, 16, 0, 0], 12, "private"),
    v4([192, 0, 0, 0], 24, "reserved"),
    v4([192, 0, 2, 0], 24, "documentation"),
    v4([192, 88, 99, 0], 24, "reserved"),
    v4([192, 168, 0, 0], 16, "private"),
    v4([198, 18, 0, 0], 15, "reserved"),
    v4([198, 51, 100, 0], 24, "documentation"),
    v4([203, 0, 113, 0], 24, "documentation"),
    v4([224, 0, 0, 0], 4, "multicast"),
    // 240.0.0.0/4, with the limited broadcast address 255.255.255.255
    v4([240, 0, 0, 0], 4, "reserved"),
];

/// The IANA IPv6 Special-Purpose Address Registry's ranges that are not globally reachable, with
/// the deprecated site-local block and multicast. The ranges that carry an IPv4 address are not
/// here: [`embedded_v4`] judges them by the address they carry.
const V6_REFUSED: &[Range<u128>] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    // Local-use IPv4/IPv6 translation (RFC 8215): whatever it carries, it is a local network's.
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "private"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "reserved"), // discard-only
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "reserved"), // dummy prefix
    // IETF protocol assignments, Teredo (2001::/32) and benchmarking (2001:2::/48) among them
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "reserved"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "reserved"), // segment routing SIDs
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "private"),   // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"), // site-local, deprecated
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

fn reason_in<T>(ranges: &[Range<T>], address: T) -> Option<&'static str>
where
    T: Copy + std::ops::Shr<u32, Output = T> + PartialEq,
{
    let bits = u32::try_from(std::mem::size_of::<T>() * 8).unwrap_or(128);
    ranges
        .iter()
        .find(|range| {
            let shift = bits - u32::from(range.prefix);
            // A /0 would shift by the full width; no range here is that wide.
            shift >= bits || address >> shift == range.first >> shift
        })
        .map(|range| range.reason)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    reason_in(V4_REFUSED, ip.to_bits())
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    match embedded_v4(ip) {
        Some(v4) => forbidden_v4(v4),
        None => reason_in(V6_REFUSED, ip.to_bits()),
    }
}

/// The IPv4 address an IPv6 address carries, for the ranges whose traffic goes to it: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-translated (`::ffff:0:0:0/96`), IPv4-compatible (`::/96`, deprecated;
/// `::` and `::1` excepted), the well-known NAT64 prefix (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..]
        | [0, 0, 0, 0, 0xffff, 0, ..]
        | [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, ..] => Some(low),
        [0x2002, high, low16, ..] => {
            Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low16)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(address: &str) -> Option<&'static str> {
        forbidden(address.parse().expect("an address"))
    }

    #[test]
    fn internal_ipv4_addresses_are_forbidden_with_their_reason() {
        assert_eq!(reason("127.0.0.1"), Some("loopback"));
        assert_eq!(reason("10.1.2.3"), Some("private"));
        assert_eq!(reason("172.16.0.1"), Some("private"));
        assert_eq!(reason("192.168.1.1"), Some("private"));
        assert_eq!(reason("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(reason("169.254.1.1"), Some("link-local"));
        assert_eq!(reason("100.64.0.1"), Some("carrier-grade NAT"));
        assert_eq!(reason("0.0.0.0"), Some("unspecified"));
        assert_eq!(reason("224.0.0.1"), Some("multicast"));
        assert_eq!(reason("255.255.255.255"), Some("reserved"));
    }

    /// The ranges of the IANA IPv4 and IPv6 Special-Purpose Address Registries that are not
    /// globally reachable, as first and last address (the IPv6 ranges that carry an IPv4 address
    /// are checked below, by what they carry).
    const NOT_GLOBALLY_REACHABLE: &[(&str, &str)] = &[
        ("0.0.0.0", "0.255.255.255"),
        ("10.0.0.0", "10.255.255.255"),
        ("100.64.0.0", "100.127.255.255"),
        ("127.0.0.0", "127.255.255.255"),
        ("169.254.0.0", "169.254.255.255"),
        ("172.16.0.0", "172.31.255.255"),
        ("192.0.0.0", "192.0.0.255"),
        ("192.0.0.0", "192.0.0.7"),
        ("192.0.0.8", "192.0.0.8"),
        ("192.0.0.170", "192.0.0.171"),
        ("192.0.2.0", "192.0.2.255"),
        ("192.88.99.0", "192.88.99.255"),
        ("192.168.0.0", "192.168.255.255"),
        ("198.18.0.0", "198.19.255.255"),
        ("198.51.100.0", "198.51.100.255"),
        ("203.0.113.0", "203.0.113.255"),
        ("240.0.0.0", "255.255.255.255"),
        ("::", "::"),
        ("::1", "::1"),
        ("64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),
        ("100::", "100::ffff:ffff:ffff:ffff"),
        ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff"),
        ("2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001::", "2001::ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:2::", "2001:2:0:ffff:ffff:ffff:ffff:ffff"),
        ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("224.0.0.0", "239.255.255.255"),
    ];

    #[test]
    fn every_range_not_globally_reachable_is_forbidden_first_to_last() {
        for (first, last) in NOT_GLOBALLY_REACHABLE {
            assert!(reason(first).is_some(), "{first} must be refused");
            assert!(reason(last).is_some(), "{last} must be refused");
        }
    }

    #[test]
    fn ipv6_carrying_an_ipv4_address_is_judged_by_the_ipv4_address() {
        let carriers: [fn(Ipv4Addr) -> String; 5] = [
            |v4| format!("::ffff:{v4}"),   // IPv4-mapped
            |v4| format!("::ffff:0:{v4}"), // IPv4-translated
            |v4| format!("::{v4}"),        // IPv4-compatible
            |v4| format!("64:ff9b::{v4}"), // NAT64, well-known prefix
            |v4| {
                let [a, b, c, d] = v4.octets();
                format!("2002:{a:02x}{b:02x}:{c:02x}{d:02x}::1") // 6to4
            },
        ];
        for carry in carriers {
            for inside in [
                "127.0.0.1",
                "10.0.0.1",
                "169.254.169.254",
                "192.168.1.1",
                "100.64.0.1",
            ] {
                let address = carry(inside.parse().expect("IPv4"));
                let expected = reason(inside);
                assert_eq!(reason(&address), expected, "{address} carries {inside}");
            }
            let public = carry(Ipv4Addr::new(8, 8, 8, 8));
            assert_eq!(reason(&public), None, "{public} carries 8.8.8.8");
        }
        // The local-use NAT64 prefix is refused whatever it carries.
        assert_eq!(reason("64:ff9b:1::808:808"), Some("private"));
    }

    #[test]
    fn internal_ipv6_addresses_and_embedded_ipv4_are_forbidden() {
        assert_eq!(reason("::1"), Some("loopback"));
        assert_eq!(reason("::"), Some("unspecified"));
        assert_eq!(reason("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(reason("::ffff:0:7f00:1"), Some("loopback"));
        assert_eq!(reason("64:ff9b:1::7f00:1"), Some("private"));
        assert_eq!(reason("::ffff:169.254.169.254"), Some("cloud metadata"));
        assert_eq!(reason("::10.0.0.1"), Some("private"));
        assert_eq!(reason("64:ff9b::a00:1"), Some("private"));
        assert_eq!(reason("2002:7f00:1::"), Some("loopback"));
        assert_eq!(reason("fe80::1"), Some("link-local"));
        assert_eq!(reason("fd00:ec2::254"), Some("private"));
        assert_eq!(reason("ff02::1"), Some("multicast"));
    }

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        assert!(parse_url("https://hooks.example.com/tollgate").is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("/relative").is_err());
        assert!(parse_url("https://user:pw@example.com/").is_err());
        assert!(parse_url(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[tokio::test]
    async fn literal_and_resolved_loopback_targets_are_refused_unless_allowed() {
        for raw in [
            "http://127.0.0.1:9/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://localhost:9/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let url = parse_url(raw).expect("well-formed");
            assert!(
                matches!(
                    check_target(&url, false).await,
                    Err(TargetError::Refused(_))
                ),
                "{raw} must be refused"
            );
            assert_eq!(check_target(&url, true).await, Ok(()), "{raw} allowed");
        }
    }
}
