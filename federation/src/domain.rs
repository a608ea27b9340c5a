//! The canonical name of an instance: what the blocklist and the peer table are keyed by.
//!
//! A block must not be slipped past by writing the same host another way, so every spelling is brought to
//! one form before it is compared or stored: lower case, IDNA (a Unicode name becomes its `xn--` form),
//! no trailing dot, and no port when it is 443 or 80 (the defaults of https and http: `https://x:80` is
//! no way to run an instance, and one rule for URLs and bare `host:port` keeps the form a fixed point).

use std::fmt;

use url::{Host, Url};

/// A host (with its port when that is not a default one), in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

/// Text that names no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an instance domain: {1}")]
pub struct BadDomain(String, &'static str);

impl Domain {
    /// The domain of an instance named by a URL (`https://pu.example/...`) or by `host[:port]`.
    pub fn parse(raw: &str) -> Result<Self, BadDomain> {
        let text = raw.trim();
        if text.contains("://") {
            let url = Url::parse(text).map_err(|_| BadDomain(raw.into(), "not a URL"))?;
            return Self::of_url(&url).ok_or(BadDomain(raw.into(), "the URL has no host"));
        }
        if text.is_empty() || text.contains(['/', '@', '?', '#', ' ']) {
            return Err(BadDomain(raw.into(), "expected a host name"));
        }
        // Parsed as an https authority, so IDNA, case and the default port are handled by `url`.
        let url = Url::parse(&format!("https://{text}/"))
            .map_err(|_| BadDomain(raw.into(), "not a valid host name"))?;
        Self::of_url(&url).ok_or(BadDomain(raw.into(), "not a valid host name"))
    }

    /// The domain of `url`, or `None` when it has no host.
    pub fn of_url(url: &Url) -> Option<Self> {
        let host = match url.host()? {
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return None;
                }
                // `url` already applied IDNA to special schemes; this keeps other inputs honest.
                match Host::parse(&name).ok()? {
                    Host::Domain(ascii) => ascii.trim_end_matches('.').to_owned(),
                    other => other.to_string(),
                }
            }
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => format!("[{ip}]"),
        };
        Some(Self(match url.port() {
            Some(port) if port != 443 && port != 80 => format!("{host}:{port}"),
            _ => host,
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> String {
        Domain::parse(s).unwrap().to_string()
    }

    #[test]
    fn spellings_of_one_host_are_one_domain() {
        for spelling in [
            "pu.example",
            "PU.Example",
            "pu.example.",
            "pu.example:443",
            "pu.example:80",
            "https://PU.example./federation/actor",
            "https://pu.example:443/",
            "http://pu.example:80/x",
            "  pu.example  ",
        ] {
            assert_eq!(d(spelling), "pu.example", "{spelling}");
        }
    }

    #[test]
    fn unicode_names_become_punycode() {
        assert_eq!(d("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(d("BÜCHER.example."), "xn--bcher-kva.example");
        assert_eq!(d("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(
            d("https://bücher.example:8443/"),
            "xn--bcher-kva.example:8443"
        );
    }

    #[test]
    fn other_ports_stay() {
        assert_eq!(d("localhost:8080"), "localhost:8080");
        assert_eq!(d("http://LocalHost.:8080/"), "localhost:8080");
        assert_eq!(d("https://pu.example:80/"), "pu.example");
    }

    #[test]
    fn not_hosts_are_refused() {
        for bad in [
            "",
            "a b",
            "user@pu.example",
            "pu.example/path",
            "https://",
            ":443",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(label in "[a-zA-Z0-9]{1,12}", tld in "[a-zA-Z]{2,6}", port in proptest::option::of(1u16..)) {
            let raw = match port {
                Some(port) => format!("{label}.{tld}:{port}"),
                None => format!("{label}.{tld}"),
            };
            let once = Domain::parse(&raw).unwrap();
            prop_assert_eq!(Domain::parse(once.as_str()).unwrap(), once);
        }

        #[test]
        fn case_trailing_dot_and_default_ports_never_matter(
            label in "[a-z0-9]{1,12}",
            tld in "[a-z]{2,6}",
            upper in proptest::collection::vec(any::<bool>(), 20),
            dot in any::<bool>(),
            port in prop::sample::select(vec!["", ":443", ":80"]),
            url in any::<bool>(),
        ) {
            let plain = format!("{label}.{tld}");
            let mut spelled: String = plain
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            if dot {
                spelled.push('.');
            }
            spelled.push_str(port);
            if url {
                let scheme = if port == ":80" { "http" } else { "https" };
                spelled = format!("{scheme}://{spelled}/federation/actor");
            }
            prop_assert_eq!(Domain::parse(&spelled).unwrap().to_string(), plain);
        }

        #[test]
        fn unicode_and_punycode_spellings_agree(label in "[a-zà-öø-þ]{1,10}", tld in "[a-z]{2,5}") {
            let unicode = format!("{label}.{tld}");
            let canonical = Domain::parse(&unicode).unwrap();
            prop_assert!(canonical.as_str().is_ascii());
            prop_assert_eq!(Domain::parse(&unicode.to_uppercase()).unwrap(), canonical.clone());
            prop_assert_eq!(Domain::parse(canonical.as_str()).unwrap(), canonical);
        }
    }
}
