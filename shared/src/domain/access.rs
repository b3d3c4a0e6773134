//! Access rules of a token: the browser origins (exact hosts or `*.example.com`) and the client
//! networks (CIDR, IPv4 and IPv6) it may be used from, and how the client's address is found
//! behind trusted proxies.

use std::net::IpAddr;

use sqlx::types::ipnetwork::IpNetwork;

use super::{RateLimit, ValidationError};

/// One allowed origin host: exact, or every subdomain of a domain (`*.example.com`, which does not
/// match `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// The suffix after `*.`, lowercased.
    Subdomains(String),
}

impl DomainPattern {
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let s = s.trim().to_ascii_lowercase();
        let (wildcard, host) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, s.clone()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let host_ok = host.len() <= 253 && host.split('.').all(label_ok);
        // `localhost` and IP literals are hosts too; wildcards need at least a two-label domain.
        if !host_ok || (wildcard && !host.contains('.')) {
            return Err(ValidationError::new(
                field,
                format!("{s:?} is not a host name or *.domain"),
            ));
        }
        Ok(if wildcard {
            Self::Subdomains(host)
        } else {
            Self::Exact(host)
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self {
            Self::Exact(exact) => host == *exact,
            Self::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Self::Exact(host) => host.clone(),
            Self::Subdomains(domain) => format!("*.{domain}"),
        }
    }
}

/// What a request must satisfy to use a token; empty lists allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub domains: Vec<DomainPattern>,
    pub networks: Vec<IpNetwork>,
}

/// Why a request may not use a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The token is limited to some origins and the request named none.
    OriginRequired,
    OriginNotAllowed(String),
    IpNotAllowed(IpAddr),
}

impl AccessRules {
    pub fn check(&self, origin: Option<&str>, ip: Option<IpAddr>) -> Result<(), Denied> {
        if !self.domains.is_empty() {
            let host = origin.ok_or(Denied::OriginRequired)?;
            if !self.domains.iter().any(|pattern| pattern.matches(host)) {
                return Err(Denied::OriginNotAllowed(host.to_owned()));
            }
        }
        if !self.networks.is_empty() {
            // Without a known address (no TCP peer) nothing can match.
            let ip = ip.ok_or(Denied::IpNotAllowed(IpAddr::from([0, 0, 0, 0])))?;
            let ip = canonical(ip);
            if !self.networks.iter().any(|network| network.contains(ip)) {
                return Err(Denied::IpNotAllowed(ip));
            }
        }
        Ok(())
    }
}

/// A change to a token's or tenant's lists: a field that is `None` is left alone, `Some(None)`
/// clears the list (no restriction, or for a token: the tenant's default), `Some(Some(list))`
/// replaces it. Lists are stored normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessChange {
    pub allowed_domains: Option<Option<Vec<String>>>,
    pub allowed_ips: Option<Option<Vec<String>>>,
    pub rate_limit: Option<Option<RateLimit>>,
    /// Whether its jobs may leave the local fleet; a token's `Some(None)` inherits its tenant's.
    pub data_policy: Option<Option<super::DataPolicy>>,
    /// A tenant's alone: whether its batch items may overflow to the cloud under hybrid routing.
    pub batch_overflow: Option<bool>,
    /// Its response cache; a token's `Some(None)` inherits its tenant's, a tenant's turns it off.
    pub cache: Option<Option<super::cache::CachePolicy>>,
}

impl AccessChange {
    /// Validates and normalizes the lists a request sent.
    pub fn parse(
        allowed_domains: Option<Option<Vec<String>>>,
        allowed_ips: Option<Option<Vec<String>>>,
        rate_limit: Option<Option<RateLimit>>,
    ) -> Result<Self, ValidationError> {
        if let Some(Some(limit)) = rate_limit
            && (limit.per_minute == 0 || limit.burst == 0 || limit.per_minute > 1_000_000)
        {
            return Err(ValidationError::new(
                "rate_limit",
                "per_minute must be 1 to 1,000,000 and burst at least 1",
            ));
        }
        const DOMAINS: &str = "allowed_domains";
        const IPS: &str = "allowed_ips";
        let domains = allowed_domains
            .map(|list| {
                list.map(|list| {
                    parse_domains(DOMAINS, &list)
                        .map(|patterns| patterns.iter().map(DomainPattern::as_string).collect())
                })
                .transpose()
            })
            .transpose()?;
        let ips = allowed_ips
            .map(|list| {
                list.map(|list| {
                    parse_networks(IPS, &list)
                        .map(|networks| networks.iter().map(ToString::to_string).collect())
                })
                .transpose()
            })
            .transpose()?;
        Ok(Self {
            allowed_domains: domains,
            allowed_ips: ips,
            rate_limit,
            ..Self::default()
        })
    }
}

impl AccessRules {
    /// The rules from stored lists; an entry that no longer parses matches nothing (it never
    /// widens access).
    pub fn from_lists(domains: Option<Vec<String>>, networks: Option<Vec<String>>) -> Self {
        let never = DomainPattern::Exact(String::new());
        Self {
            domains: domains
                .unwrap_or_default()
                .iter()
                .map(|d| DomainPattern::parse("", d).unwrap_or_else(|_| never.clone()))
                .collect(),
            networks: networks
                .unwrap_or_default()
                .iter()
                .map(|n| {
                    n.parse().unwrap_or_else(|_| {
                        // 0.0.0.0/32: nobody's address.
                        IpNetwork::from(IpAddr::from([0, 0, 0, 0]))
                    })
                })
                .collect(),
        }
    }
}

/// Parses an allowed-domains list (at most 100 entries).
pub fn parse_domains(field: &str, list: &[String]) -> Result<Vec<DomainPattern>, ValidationError> {
    if list.len() > 100 {
        return Err(ValidationError::new(field, "at most 100 entries"));
    }
    list.iter()
        .map(|s| DomainPattern::parse(field, s))
        .collect()
}

/// Parses an allowed-IP list of addresses or CIDR networks (at most 100 entries).
pub fn parse_networks(field: &str, list: &[String]) -> Result<Vec<IpNetwork>, ValidationError> {
    if list.len() > 100 {
        return Err(ValidationError::new(field, "at most 100 entries"));
    }
    list.iter()
        .map(|s| {
            s.trim().parse::<IpNetwork>().map_err(|_| {
                ValidationError::new(field, format!("{s:?} is not an IP address or CIDR network"))
            })
        })
        .collect()
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// nearest address in `Forwarded` (or else `X-Forwarded-For`) that is not itself a trusted proxy.
/// Headers from an untrusted peer are ignored: anyone can send them.
pub fn client_ip(
    peer: IpAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &[IpNetwork],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| {
        trusted
            .iter()
            .any(|network| network.contains(canonical(ip)))
    };
    if !is_trusted(peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = match (forwarded, x_forwarded_for) {
        (Some(forwarded), _) => forwarded_for(forwarded),
        (None, Some(xff)) => xff
            .split(',')
            .filter_map(|hop| parse_ip(hop.trim()))
            .collect(),
        (None, None) => Vec::new(),
    };
    // Right to left: each trusted proxy appended the address it received from.
    chain
        .iter()
        .rev()
        .copied()
        .find(|&ip| !is_trusted(ip))
        .or_else(|| chain.first().copied())
        .unwrap_or(peer)
}

/// The `for=` addresses of an RFC 7239 `Forwarded` header, in order.
fn forwarded_for(header: &str) -> Vec<IpAddr> {
    header
        .split(',')
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_ip(value.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect()
}

/// An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as a dual-stack listener reports IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> DomainPattern {
        DomainPattern::parse("allowed_domains", s).expect("valid")
    }

    #[test]
    fn exact_and_wildcard_domains_match_as_expected() {
        assert!(pattern("shop.example.com").matches("Shop.Example.com"));
        assert!(!pattern("shop.example.com").matches("evil-shop.example.com"));
        assert!(pattern("*.example.com").matches("a.example.com"));
        assert!(pattern("*.example.com").matches("a.b.example.com"));
        assert!(!pattern("*.example.com").matches("example.com"));
        assert!(!pattern("*.example.com").matches("badexample.com"));
        assert!(DomainPattern::parse("f", "*.com").is_err());
        assert!(DomainPattern::parse("f", "http://x.com").is_err());
        assert!(DomainPattern::parse("f", "").is_err());
    }

    #[test]
    fn rules_need_a_matching_origin_and_address() {
        let rules = AccessRules {
            domains: vec![pattern("*.example.com")],
            networks: parse_networks("f", &["10.0.0.0/8".into(), "2001:db8::/32".into()])
                .expect("valid"),
        };
        let ip = |s: &str| Some(s.parse().expect("ip"));
        assert_eq!(rules.check(Some("a.example.com"), ip("10.1.2.3")), Ok(()));
        assert_eq!(
            rules.check(Some("a.example.com"), ip("2001:db8::7")),
            Ok(())
        );
        assert_eq!(
            rules.check(Some("a.example.com"), ip("::ffff:10.0.0.1")),
            Ok(())
        );
        assert_eq!(
            rules.check(None, ip("10.1.2.3")),
            Err(Denied::OriginRequired)
        );
        assert!(matches!(
            rules.check(Some("evil.com"), ip("10.1.2.3")),
            Err(Denied::OriginNotAllowed(_))
        ));
        assert!(matches!(
            rules.check(Some("a.example.com"), ip("192.168.1.1")),
            Err(Denied::IpNotAllowed(_))
        ));
        assert_eq!(AccessRules::default().check(None, None), Ok(()));
    }

    #[test]
    fn forwarded_headers_count_only_behind_a_trusted_proxy() {
        let trusted = parse_networks("f", &["10.0.0.0/8".into()]).expect("valid");
        let peer = |s: &str| s.parse::<IpAddr>().expect("ip");
        let spoofed = Some("1.2.3.4");
        assert_eq!(
            client_ip(peer("203.0.113.9"), None, spoofed, &trusted),
            peer("203.0.113.9")
        );
        assert_eq!(
            client_ip(peer("10.0.0.2"), None, spoofed, &trusted),
            peer("1.2.3.4")
        );
        assert_eq!(
            client_ip(
                peer("10.0.0.2"),
                None,
                Some("9.9.9.9, 1.2.3.4, 10.0.0.7"),
                &trusted
            ),
            peer("1.2.3.4"),
            "the nearest untrusted hop, not what the client claimed first"
        );
        assert_eq!(
            client_ip(
                peer("10.0.0.2"),
                Some("for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""),
                spoofed,
                &trusted
            ),
            peer("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer("10.0.0.2"), None, None, &trusted),
            peer("10.0.0.2")
        );
    }
}
