//! Clone URLs and the policy that keeps the server from being used to reach inside its own network.
//!
//! Only `http`, `https` and `git` URLs are accepted, and `file` URLs for admins. A host that resolves to a
//! loopback, private, link-local, unique-local, site-local, carrier-grade NAT, multicast or unspecified
//! address, or to an IPv6 address embedding such an IPv4 address (mapped, IPv4-compatible, NAT64, 6to4,
//! Teredo), is refused unless the instance turns on `allow_local_remotes` (for a self-hosted git server on
//! the LAN). The check runs when a URL is stored and again at every connect ([`crate::transport`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use url::Url;

use crate::RepoError;

/// What the instance allows for a given caller.
#[derive(Debug, Clone, Copy)]
pub struct RemotePolicy {
    pub allow_local_remotes: bool,
    pub allow_file_urls: bool,
}

/// A clone URL that passed the policy. Credentials never live in it: they are stored apart, encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneUrl(Url);

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || a == 0
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // Addresses that carry an IPv4 address inside them reach that address: judge it.
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible ::a.b.c.d (deprecated, never a real remote), and :: and ::1.
        return true;
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded(s[6], s[7])); // NAT64, 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return is_internal_v4(embedded(s[1], s[2])); // 6to4, 2002::/16
    }
    let first = s[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
        || (s[0] == 0x2001 && s[1] == 0) // Teredo, 2001::/32: tunnels to an IPv4 address
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation, 2001:db8::/32
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site local (deprecated), fec0::/10
}

/// Whether an address is inside a private network or the machine itself.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

impl CloneUrl {
    /// Parses `raw` and applies `policy`, resolving the host (blocking DNS look-up).
    pub fn parse(raw: &str, policy: RemotePolicy) -> Result<Self, RepoError> {
        let url =
            Url::parse(raw.trim()).map_err(|e| RepoError::UrlRefused(format!("not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RepoError::UrlRefused(
                "put credentials in the credentials fields, not in the URL".into(),
            ));
        }
        match url.scheme() {
            "http" | "https" | "git" => {}
            "file" if policy.allow_file_urls => return Ok(Self(url)),
            "file" => {
                return Err(RepoError::UrlRefused(
                    "file URLs are for admins only".into(),
                ));
            }
            other => {
                return Err(RepoError::UrlRefused(format!(
                    "scheme {other:?} is not allowed; use http, https or git"
                )));
            }
        }
        let host = url
            .host_str()
            .ok_or_else(|| RepoError::UrlRefused("the URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !policy.allow_local_remotes {
            let port = url.port_or_known_default().unwrap_or(9418);
            let addresses: Vec<IpAddr> = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| RepoError::UrlRefused(format!("cannot resolve {host}: {e}")))?
                .map(|a| a.ip())
                .collect();
            if addresses.is_empty() || addresses.iter().copied().any(is_internal) {
                return Err(RepoError::UrlRefused(format!(
                    "{host} resolves to a loopback or private address; an admin can allow such remotes \
                     with allow_local_remotes (PEPEUNIT_ALLOW_LOCAL_REMOTES)"
                )));
            }
        }
        Ok(Self(url))
    }

    /// A stored URL, already checked when it was created.
    pub fn trusted(raw: &str) -> Result<Self, RepoError> {
        Url::parse(raw)
            .map(Self)
            .map_err(|e| RepoError::UrlRefused(format!("not a URL: {e}")))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: RemotePolicy = RemotePolicy {
        allow_local_remotes: false,
        allow_file_urls: false,
    };

    #[test]
    fn internal_hosts_and_odd_schemes_are_refused() {
        for url in [
            "http://127.0.0.1/repo.git",
            "http://localhost:3000/repo.git",
            "https://10.1.2.3/repo.git",
            "https://192.168.0.10/repo.git",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/repo.git",
            "https://[fd00::1]/repo.git",
            "https://[::ffff:127.0.0.1]/repo.git",
            "https://100.64.0.1/repo.git",
            "ssh://git@example.com/repo.git",
            "file:///etc",
            "https://user:pass@example.com/repo.git",
            "not a url",
        ] {
            assert!(CloneUrl::parse(url, STRICT).is_err(), "{url}");
        }
    }

    #[test]
    fn the_switches_open_what_they_name() {
        let open = RemotePolicy {
            allow_local_remotes: true,
            allow_file_urls: true,
        };
        assert!(CloneUrl::parse("http://127.0.0.1:8080/repo.git", open).is_ok());
        assert!(CloneUrl::parse("file:///srv/git/repo", open).is_ok());
        assert!(CloneUrl::parse("ftp://example.com/repo", open).is_err());
    }

    #[test]
    fn ipv6_forms_that_reach_internal_addresses_are_internal() {
        for (ip, internal) in [
            ("::1", true),
            ("::", true),
            ("::127.0.0.1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::7f00:1", true),
            ("64:ff9b::a00:1", true),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::1", true),
            ("fec0::1", true),
            ("feff::1", true),
            ("fe80::1", true),
            ("fd00::1", true),
            ("2002:7f00:1::", true),
            ("2002:7f00:1::1", true),
            ("2002:c0a8:101::1", true),
            ("2002:808:808::1", false),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", true),
            ("2001:db8::1", true),
            ("ff02::1", true),
            ("2606:4700::1111", false),
            ("2a00:1450:4001:80b::200e", false),
        ] {
            let parsed: Ipv6Addr = ip.parse().unwrap();
            assert_eq!(is_internal(IpAddr::V6(parsed)), internal, "{ip}");
        }
    }

    proptest! {
        /// Any IPv4 address embedded in IPv6 (mapped, NAT64, 6to4) is judged as the IPv4 address itself.
        #[test]
        fn embedded_v4_is_judged_as_v4(a in 0u8..=255, b in 0u8..=255, c in 0u8..=255, d in 0u8..=255) {
            let v4 = Ipv4Addr::new(a, b, c, d);
            let [hi, lo] = [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])];
            let expected = is_internal(IpAddr::V4(v4));
            prop_assert_eq!(is_internal(IpAddr::V6(v4.to_ipv6_mapped())), expected);
            prop_assert_eq!(is_internal(IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo))), expected);
            prop_assert_eq!(is_internal(IpAddr::V6(Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1))), expected);
            prop_assert!(is_internal(IpAddr::V6(v4.to_ipv6_compatible())));
        }

        #[test]
        fn private_v4_ranges_are_internal(b in 0u8..=255, c in 0u8..=255, d in 0u8..=255) {
            prop_assert!(is_internal(IpAddr::V4(Ipv4Addr::new(10, b, c, d))));
            prop_assert!(is_internal(IpAddr::V4(Ipv4Addr::new(127, b, c, d))));
            prop_assert!(is_internal(IpAddr::V4(Ipv4Addr::new(192, 168, c, d))));
            prop_assert!(is_internal(IpAddr::V4(Ipv4Addr::new(172, 16 + b % 16, c, d))));
        }

        #[test]
        fn public_v4_is_not(a in 1u8..=223, b in 0u8..=255, c in 0u8..=255, d in 1u8..=254) {
            let ip = Ipv4Addr::new(a, b, c, d);
            let private = a == 10 || a == 127 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168)
                || (a == 169 && b == 254) || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 2) || (a == 198 && b == 51 && c == 100) || (a == 203 && b == 0 && c == 113);
            prop_assert_eq!(is_internal(IpAddr::V4(ip)), private);
        }
    }
}
