//! Who may talk to the daemon: access modes by client address, the Origin
//! and Sec-Fetch-Site checks against cross-site requests, and the bearer
//! token for operator commands.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

/// Which client addresses are served at all (NAT32's HTTPD modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Loopback clients only (the default).
    #[default]
    Local,
    /// Loopback and private ranges (RFC 1918, link-local, IPv6 ULA).
    Private,
    /// Every address.
    Public,
    /// Only addresses in the allow list.
    Acl,
}

/// The address policy: a mode plus extra allowed ranges.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    /// The mode.
    pub mode: AccessMode,
    /// Ranges admitted in every mode; in `acl` mode, the only ones.
    pub allow: Vec<IpNet>,
}

/// Normalises an IPv4-mapped IPv6 address to IPv4, so that `::ffff:127.0.0.1`
/// is treated as the loopback address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

impl AddressPolicy {
    /// Whether a client at `ip` is served.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        match self.mode {
            AccessMode::Local => ip.is_loopback(),
            AccessMode::Private => is_private(ip),
            AccessMode::Public => true,
            AccessMode::Acl => false,
        }
    }
}

/// Whether `ip` is a loopback address (operator rights over HTTP without a
/// token are only ever given to loopback clients).
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Checks `Origin` (and `Sec-Fetch-Site`) against the daemon's own origin.
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    /// Extra origins allowed, exactly as browsers send them
    /// (`https://example.com`).
    pub extra: Vec<String>,
    /// Only accept the request's own Host as an origin when it names a
    /// loopback host: a page on a DNS-rebound name then cannot pass as
    /// same-origin to a daemon that only serves this machine.
    pub loopback_hosts_only: bool,
}

fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>()
        .is_ok_and(|ip| canonical(ip).is_loopback())
}

/// How a request relates to the daemon's own site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// No browser context at all (curl, a script): no Origin, no Fetch
    /// metadata.
    NoBrowser,
    /// A page of this daemon's own origin, or an allowed origin.
    SameOrigin,
}

impl OriginPolicy {
    /// Classifies a request, or explains why it is refused as cross-site.
    pub fn check(&self, headers: &HeaderMap, scheme: &str) -> Result<Site, String> {
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let origin = headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("?"));
        match origin {
            None => match fetch_site {
                None | Some("none") | Some("same-origin") => Ok(if fetch_site.is_none() {
                    Site::NoBrowser
                } else {
                    Site::SameOrigin
                }),
                Some(other) => Err(format!(
                    "cross-site request refused (Sec-Fetch-Site: {other})"
                )),
            },
            Some(origin) => {
                if self.extra.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                    return Ok(Site::SameOrigin);
                }
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let own = format!("{scheme}://{host}");
                let same = !host.is_empty()
                    && own.eq_ignore_ascii_case(origin)
                    && (!self.loopback_hosts_only || host_is_loopback(host));
                if same {
                    Ok(Site::SameOrigin)
                } else {
                    Err(format!("cross-site request refused (Origin: {origin})"))
                }
            }
        }
    }
}

/// The bearer token for operator commands, compared in constant time and
/// never printed.
#[derive(Clone, Default)]
pub struct Token(Option<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Token(set)"
        } else {
            "Token(none)"
        })
    }
}

/// What the Authorization header proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No Authorization header.
    Missing,
    /// A bearer token that matches.
    Valid,
    /// A header that does not carry the right token.
    Invalid,
}

impl Token {
    /// A token, or none when `value` is None or empty.
    pub fn new(value: Option<String>) -> Self {
        Token(value.filter(|v| !v.is_empty()))
    }

    /// Whether a token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Checks the request's `Authorization: Bearer` header.
    pub fn check(&self, headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credentials::Missing;
        };
        let Some(expected) = &self.0 else {
            return Credentials::Invalid;
        };
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
            .unwrap_or(b"");
        if bool::from(presented.ct_eq(expected.as_bytes())) {
            Credentials::Valid
        } else {
            Credentials::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn modes_admit_what_they_say() {
        let local = AddressPolicy::default();
        assert!(local.admits(ip("127.0.0.1")));
        assert!(local.admits(ip("::1")));
        assert!(local.admits(ip("::ffff:127.0.0.5")));
        assert!(!local.admits(ip("192.168.1.2")));
        let private = AddressPolicy {
            mode: AccessMode::Private,
            allow: vec![],
        };
        assert!(private.admits(ip("10.1.2.3")));
        assert!(private.admits(ip("fd00::1")));
        assert!(!private.admits(ip("8.8.8.8")));
        let acl = AddressPolicy {
            mode: AccessMode::Acl,
            allow: vec!["127.0.0.2/32".parse().expect("net")],
        };
        assert!(acl.admits(ip("127.0.0.2")));
        assert!(!acl.admits(ip("127.0.0.3")));
        assert!(!acl.admits(ip("127.0.0.1")));
        let public = AddressPolicy {
            mode: AccessMode::Public,
            allow: vec![],
        };
        assert!(public.admits(ip("8.8.8.8")));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn origins() {
        let p = OriginPolicy {
            extra: vec!["https://ok.example".into()],
            loopback_hosts_only: true,
        };
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(p.check(&own, "http"), Ok(Site::SameOrigin));
        let bare = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(p.check(&bare, "http"), Ok(Site::NoBrowser));
        let foreign = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(p.check(&foreign, "http").is_err());
        let rebound = headers(&[
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ]);
        assert!(p.check(&rebound, "http").is_err());
        let extra = headers(&[("host", "127.0.0.1:8080"), ("origin", "https://ok.example")]);
        assert_eq!(p.check(&extra, "http"), Ok(Site::SameOrigin));
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(p.check(&cross, "http").is_err());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(p.check(&null, "http").is_err());
        let wrong_scheme = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://127.0.0.1:8080"),
        ]);
        assert!(p.check(&wrong_scheme, "http").is_err());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost:80",
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.9.9.9",
            "LOCALHOST",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in ["example.com:80", "10.0.0.1:80", "[fe80::1]:1"] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn tokens() {
        let t = Token::new(Some("s3cret".into()));
        assert_eq!(
            t.check(&headers(&[("authorization", "Bearer s3cret")])),
            Credentials::Valid
        );
        assert_eq!(
            t.check(&headers(&[("authorization", "Bearer s3cre")])),
            Credentials::Invalid
        );
        assert_eq!(t.check(&headers(&[])), Credentials::Missing);
        assert!(!Token::new(Some(String::new())).is_set());
        assert_eq!(format!("{t:?}"), "Token(set)");
    }
}
