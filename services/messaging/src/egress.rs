//! Where webhooks may go. A participant chooses the URL, so without a check it could
//! make the platform call its internal network (the database, the cloud's metadata
//! service). Outside a dev stack only public unicast addresses are allowed; the check
//! runs on every address a name resolves to, at each attempt, so a name cannot be
//! re-pointed after it was accepted (DNS rebinding).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether a webhook may be sent to `ip` when private targets are not allowed.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // shared address space (carrier-grade NAT), RFC 6598
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, benchmarking, reserved
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // documentation 2001:db8::/32
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // NAT64 and 6to4 embed IPv4 addresses that may be private
        || first == 0x0064
        || first == 0x2002)
}

/// Why a URL is refused as a webhook target, or `None` when it is acceptable as
/// written (a name is checked again when it is resolved).
pub fn refuse_url(url: &str, allow_private: bool) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "https" | "http") {
        return Some("the scheme must be https or http".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("credentials in the URL are not allowed; authenticate by signature".into());
    }
    let ip = match parsed.host() {
        None => return Some("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                return Some("`localhost` is not a public address".into());
            }
            return None;
        }
    };
    (!allow_private && !is_public(ip)).then(|| {
        format!("{ip} is not a public address (loopback, private, link-local or reserved)")
    })
}

/// Resolves names for the webhook client and drops every address it may not call.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address ({} refused)",
                    found.len()
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl GuardedResolver {
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "2002:0a00:0001::1",
        ] {
            assert!(!is_public(ip(s)), "{s}");
        }
    }

    #[test]
    fn public_addresses_are() {
        for s in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(s)), "{s}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(refuse_url("https://hooks.example.com/x", false), None);
        assert!(refuse_url("https://127.0.0.1/x", false).is_some());
        assert!(refuse_url("http://10.0.0.1:8080/", false).is_some());
        assert!(refuse_url("http://[::1]/", false).is_some());
        assert!(refuse_url("http://localhost:9/", false).is_some());
        assert!(refuse_url("ftp://example.com/", false).is_some());
        assert!(refuse_url("https://user:pw@example.com/", false).is_some());
        assert!(refuse_url("not a url", false).is_some());
        assert_eq!(refuse_url("http://127.0.0.1:9/x", true), None);
        assert_eq!(refuse_url("http://localhost:9/x", true), None);
    }

    #[tokio::test]
    async fn the_resolver_drops_private_answers() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(guarded.resolve(name).await.is_err());
        let open = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(open.resolve(name).await.expect("resolves").next().is_some());
    }
}
