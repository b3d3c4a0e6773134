//! The SSRF guard: a webhook may only reach the public internet.
//!
//! A URL's host is resolved and every address checked, and the connection then goes to a checked
//! address: the worker's HTTP client resolves through [`GuardedResolver`], which checks what it
//! returns, so a name that re-resolves to an internal address between the check and the connect
//! (DNS rebinding) is refused at connect time too. Hosts given as literal IPs never reach a
//! resolver, so [`check_target`] checks them itself.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        Some(Host::Ipv4(ip)) => check_address(&ip.to_string(), IpAddr::V4(ip), allow_private),
        Some(Host::Ipv6(ip)) => check_address(&ip.to_string(), IpAddr::V6(ip), allow_private),
        Some(Host::Domain(name)) => resolve(name, port, allow_private).await.map(drop),
        None => Err(TargetError::BadUrl("has no host".into())),
    }
}

fn check_address(host: &str, address: IpAddr, allow_private: bool) -> Result<(), TargetError> {
    match forbidden(address) {
        Some(reason) if !allow_private => Err(TargetError::Refused(TargetRefused {
            host: host.to_owned(),
            address,
            reason,
        })),
        _ => Ok(()),
    }
}

async fn resolve(
    name: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|_| TargetError::Unresolvable(name.to_owned()))?
        .collect();
    if addresses.is_empty() {
        return Err(TargetError::Unresolvable(name.to_owned()));
    }
    for address in &addresses {
        check_address(name, address.ip(), allow_private)?;
    }
    Ok(addresses)
}

/// The HTTP client's resolver for webhook deliveries: it hands the client only checked addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            // The client sets the URL's port on what a resolver returns.
            let addresses = resolve(name.as_str(), 0, allow_private)
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

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 // includes the broadcast address
        || (a, b) == (198, 18) // benchmarking, 198.18.0.0/15
        || (a, b) == (198, 19)
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
    // IETF protocol assignments
    {
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // IPv4 carried inside IPv6 is judged as the IPv4 address it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if segments[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d, deprecated)
        forbidden_v4(embedded(segments[6], segments[7]))
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64
        forbidden_v4(embedded(segments[6], segments[7]))
    } else if segments[0] == 0x2002 {
        // 6to4
        forbidden_v4(embedded(segments[1], segments[2]))
    } else if segments[0] & 0xffc0 == 0xfe80 || segments[0] & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("private")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
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

    #[test]
    fn internal_ipv6_addresses_and_embedded_ipv4_are_forbidden() {
        assert_eq!(reason("::1"), Some("loopback"));
        assert_eq!(reason("::"), Some("unspecified"));
        assert_eq!(reason("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(reason("::ffff:169.254.169.254"), Some("cloud metadata"));
        assert_eq!(reason("::10.0.0.1"), Some("private"));
        assert_eq!(reason("64:ff9b::a00:1"), Some("private"));
        assert_eq!(reason("2002:7f00:1::"), Some("loopback"));
        assert_eq!(reason("fe80::1"), Some("link-local"));
        assert_eq!(reason("fd00:ec2::254"), Some("private"));
        assert_eq!(reason("ff02::1"), Some("multicast"));
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(reason(address), None, "{address}");
        }
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
