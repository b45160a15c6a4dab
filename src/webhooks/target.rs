//! Where webhooks may go: http(s) URLs whose host is not on this machine, its private
//! networks or a cloud metadata service (SSRF), checked on the URL, after every DNS lookup
//! (the addresses a connection uses are the ones checked) and on every redirect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;

/// Whether `ip` is one webhooks must not reach by default: unspecified, loopback, private,
/// shared (CGNAT), link-local (metadata services), documentation, benchmarking, multicast,
/// broadcast or reserved; IPv4 inside IPv6 (mapped, compatible, NAT64) as its IPv4.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96), IPv4-compatible (::/96) and IPv4-translated
            // (::ffff:0:0/96) addresses carry an IPv4 address.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4])
                || s[0..6] == [0; 6]
                || (s[0..4] == [0; 4] && s[4] == 0xffff && s[5] == 0)
            {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return forbidden_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 among them
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (RFC 8215)
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo…)
                || s[0] == 0x2002 // 6to4: an IPv4 address of any kind inside
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// Host names that name this machine or a metadata service whatever DNS says.
fn forbidden_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "metadata.google.internal"
        || host == "metadata"
        || host.ends_with(".internal")
}

/// Checks an endpoint URL as written: http or https, a host, no credentials, no fragment,
/// at most [`MAX_URL_LEN`], and (unless `allow_private`) no forbidden address or name.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must be http:// or https://".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("url must not have a #fragment".into());
    }
    check_host(&url, allow_private)?;
    Ok(url)
}

fn check_host(url: &Url, allow_private: bool) -> Result<(), String> {
    let refused = || {
        "url must not point at a loopback, private, link-local or metadata address \
         (webhooks.allow_private_targets is off)"
            .to_string()
    };
    match url.host() {
        None => Err("url must have a host".into()),
        Some(_) if allow_private => Ok(()),
        Some(Host::Ipv4(ip)) if forbidden_ip(ip.into()) => Err(refused()),
        Some(Host::Ipv6(ip)) if forbidden_ip(ip.into()) => Err(refused()),
        Some(Host::Domain(name)) if forbidden_name(name) => Err(refused()),
        Some(_) => Ok(()),
    }
}

/// Resolves the URL's host now (when it is a name) and refuses it if every address it has
/// is forbidden. A name that does not resolve yet is accepted: each delivery checks again.
pub async fn check_resolved(url: &Url, allow_private: bool) -> Result<(), String> {
    let Some(Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::lookup_host((name.to_string(), port)),
    )
    .await;
    let Ok(Ok(addrs)) = lookup else {
        return Ok(());
    };
    let addrs: Vec<SocketAddr> = addrs.collect();
    if !addrs.is_empty() && addrs.iter().all(|a| forbidden_ip(a.ip())) {
        return Err(format!(
            "url's host {name} resolves only to loopback, private, link-local or metadata addresses"
        ));
    }
    Ok(())
}

/// The DNS resolver of the delivery client: a name's forbidden addresses are dropped, so a
/// connection can only be made to the allowed ones (a name that resolves to none fails).
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            if forbidden_name(&host) {
                return Err(format!("{host} is a forbidden webhook host").into());
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !forbidden_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no address webhooks may reach (loopback, private, \
                     link-local or metadata addresses are refused)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Redirects followed: at most 3, each to an http(s) URL that [`check_url`] accepts.
pub fn redirect_policy(allow_private: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 3 {
            return attempt.error("more than 3 redirects");
        }
        match check_url(attempt.url().as_str(), allow_private) {
            Ok(_) => attempt.follow(),
            Err(e) => attempt.error(format!("redirected to a refused URL: {e}")),
        }
    })
}

/// The HTTP client deliveries are sent with.
pub fn client(allow_private: bool, timeout: std::time::Duration) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .redirect(redirect_policy(allow_private))
        .no_proxy()
        .user_agent(concat!("Ferrocast-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    builder.build().expect("the webhook client builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "::ffff:0:7f00:1",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "ff02::1",
        ] {
            assert!(forbidden_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!forbidden_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_as_written() {
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://localhost:9000/",
            "http://a.localhost/",
            "http://metadata.google.internal/",
            "https://user:pass@example.com/",
            "https://example.com/#frag",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000)), true).is_err());
        assert!(check_url("https://hooks.example.com/ferrocast?x=1", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(check_url("ftp://127.0.0.1/", true).is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_forbidden_addresses() {
        use reqwest::dns::Resolve;
        // "localhost" is refused by name; a name that resolves only to loopback is too.
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(GuardedResolver.resolve(name).await.is_err());
        let url = Url::parse("http://localhost./").unwrap();
        assert!(check_url(url.as_str(), false).is_err());
        // A name not refused by itself whose addresses all are: this machine's own, which
        // its hosts file maps to loopback.
        let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let own = own.trim();
        let name: reqwest::dns::Name = own.parse().unwrap();
        let refused = GuardedResolver.resolve(name).await.err().unwrap();
        assert!(
            refused.to_string().contains("no address"),
            "{own}: {refused}"
        );
        let url = Url::parse(&format!("http://{own}/")).unwrap();
        assert!(check_resolved(&url, false).await.is_err());
        assert!(check_resolved(&url, true).await.is_ok());
    }
}
