//! Who may talk to the daemon: access modes by client address, the Origin
//! and Sec-Fetch-Site checks against cross-site requests, and the bearer
//! token for operator commands.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

/// Which client addresses are served at all (NAT32's HTTPD modes).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessMode {
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
pub(crate) struct AddressPolicy {
    /// The mode.
    pub(crate) mode: AccessMode,
    /// Ranges admitted in every mode; in `acl` mode, the only ones.
    pub(crate) allow: Vec<IpNet>,
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
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
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
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// The host names the daemon answers for: what a request names in its
/// `Host` header (or an absolute-form target) must be one of them. This is
/// what stops DNS rebinding: a page of another site whose name was made to
/// resolve to this daemon's address still names its own site.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostPolicy {
    /// Hosts configured with `--allowed-host`.
    allowed: Vec<AllowedHost>,
    /// Whether any well-formed host is served (a mode other than `local`
    /// with no host configured).
    any: bool,
}

/// One `--allowed-host`: a name or address, with or without a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    /// Lowercase; an IPv6 address keeps its brackets.
    name: String,
    /// The one port it is served on, or any when None.
    port: Option<u16>,
}

impl std::str::FromStr for AllowedHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, port) = split_host(s).ok_or_else(|| {
            format!(
                "invalid allowed host '{s}'; expected a host name or address with an optional \
                 port, e.g. example.com, example.com:8443 or [2001:db8::1]"
            )
        })?;
        Ok(AllowedHost {
            name: name.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Splits a Host value into its name and port, or None when it is not a
/// well-formed `host[:port]`: a DNS name (letters, digits, `-`, `_`, dots
/// between non-empty labels), an IPv4 address, or an IPv6 address in
/// brackets (without a zone: a zone never belongs in a Host).
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')?;
            let name = &host[..end + 2];
            rest[..end].parse::<std::net::Ipv6Addr>().ok()?;
            (name, &rest[end + 1..])
        }
        None => match host.find(':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, ""),
        },
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        None => return None,
        Some(digits) => {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    let plain_name = || {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    (name.starts_with('[') || plain_name()).then_some((name, port))
}

/// Whether a host name (without its port) is this machine's loopback:
/// `localhost` and names under it (browsers resolve those to loopback
/// themselves), 127.0.0.0/8, and `[::1]` (also as `[::ffff:127.x.y.z]`).
fn is_loopback_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(sub) = name.len().checked_sub(".localhost".len()) {
        if sub > 0 && name[sub..].eq_ignore_ascii_case(".localhost") {
            return true;
        }
    }
    let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6),
        None => name.parse::<std::net::Ipv4Addr>().map(IpAddr::V4),
    };
    ip.is_ok_and(|ip| canonical(ip).is_loopback())
}

impl HostPolicy {
    /// The policy of an access mode: `local` serves loopback names and
    /// `allowed`; the other modes serve `allowed` (and loopback names), or
    /// any host when `allowed` is empty.
    pub(crate) fn new(mode: AccessMode, allowed: Vec<AllowedHost>) -> Self {
        HostPolicy {
            any: mode != AccessMode::Local && allowed.is_empty(),
            allowed,
        }
    }

    /// Whether a request naming `host` (a Host header's value, port
    /// included) is served.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        self.any
            || is_loopback_name(name)
            || self.allowed.iter().any(|a| {
                a.name.eq_ignore_ascii_case(name) && a.port.map_or(true, |p| Some(p) == port)
            })
    }
}

/// Checks `Origin`, `Sec-Fetch-Site` and `Referer` against the daemon's own
/// origin.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginPolicy {
    /// Extra origins allowed, exactly as browsers send them
    /// (`https://example.com`).
    pub(crate) extra: Vec<String>,
    /// The hosts served: the request's own `SCHEME://HOST` is an origin of
    /// the daemon only when HOST is one of them.
    pub(crate) hosts: HostPolicy,
}

/// How a request relates to the daemon's own site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// Nothing shows where it comes from: no Origin, and no Sec-Fetch-Site
    /// or `none`. curl or a script; but also an `<img>` or `<script>` tag
    /// in an older browser, or a link opened from outside the browser.
    Unproven,
    /// A page of this daemon's own origin, or an allowed origin: an Origin
    /// that says so, or `Sec-Fetch-Site: same-origin`.
    SameOrigin,
}

/// Longest part of a refused header shown in a refusal.
const MAX_SHOWN: usize = 100;

/// `text` for a one-line message (and the Monitor): at most [`MAX_SHOWN`]
/// characters, escaped, so a header cannot forge a line or reach a
/// terminal as a control sequence.
pub(crate) fn shown(text: &str) -> String {
    crate::base::text::shown(text, MAX_SHOWN).to_string()
}

/// The origin (`scheme://authority`) of a Referer, or None when it is not
/// an absolute http(s) URL.
fn referer_origin(referer: &str) -> Option<String> {
    let uri: axum::http::Uri = referer.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let authority = uri.authority()?.as_str();
    // Browsers never send credentials in a Referer; a client that does is
    // not showing an origin.
    if authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

impl OriginPolicy {
    /// Whether `origin` (`scheme://host[:port]`) is the daemon's own for a
    /// request naming `host`, or one of the extra origins.
    fn is_own(&self, origin: &str, scheme: &str, host: &str) -> bool {
        if self.extra.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        !host.is_empty()
            && self.hosts.allows(host)
            && origin.len() == scheme.len() + 3 + host.len()
            && origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
    }

    /// Classifies a request, or explains why it is refused as cross-site:
    /// a foreign Origin, `Sec-Fetch-Site: cross-site` or `same-site`, or a
    /// Referer from another origin.
    pub(crate) fn check(&self, headers: &HeaderMap, scheme: &str) -> Result<Site, String> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let site = match headers.get(header::ORIGIN) {
            None => match fetch_site {
                None | Some("none") => Site::Unproven,
                Some("same-origin") => Site::SameOrigin,
                Some(other) => {
                    return Err(format!(
                        "cross-site request refused (Sec-Fetch-Site: {})",
                        shown(other)
                    ))
                }
            },
            Some(origin) => {
                let origin = origin.to_str().unwrap_or("?");
                if !self.is_own(origin, scheme, host) {
                    return Err(format!(
                        "cross-site request refused (Origin: {})",
                        shown(origin)
                    ));
                }
                Site::SameOrigin
            }
        };
        // A page of another site may hide its Origin from a GET, but not
        // (unless it asks the browser to send none) its Referer.
        if let Some(referer) = headers.get(header::REFERER) {
            let referer = String::from_utf8_lossy(referer.as_bytes());
            match referer_origin(&referer) {
                Some(origin) if self.is_own(&origin, scheme, host) => {}
                Some(origin) => {
                    return Err(format!(
                        "cross-site request refused (Referer: {})",
                        shown(&origin)
                    ))
                }
                None => {
                    return Err(format!(
                        "cross-site request refused (Referer: {}, not a URL)",
                        shown(&referer)
                    ))
                }
            }
        }
        Ok(site)
    }
}

/// The bearer token for operator commands, compared in constant time and
/// never printed.
#[derive(Clone, Default)]
pub(crate) struct Token(Option<String>);

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
pub(crate) enum Credentials {
    /// No Authorization header, or one of another scheme (a proxy's
    /// `Basic` login in front of the daemon is not meant for it).
    Missing,
    /// A bearer token that matches.
    Valid,
    /// A header that does not carry the right token.
    Invalid,
}

impl Token {
    /// A token, or none when `value` is None or empty.
    pub(crate) fn new(value: Option<String>) -> Self {
        Token(value.filter(|v| !v.is_empty()))
    }

    /// Whether a token is configured.
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Checks the request's `Authorization: Bearer` header.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credentials::Missing;
        };
        let Some(presented) = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
        else {
            return Credentials::Missing;
        };
        let Some(expected) = &self.0 else {
            return Credentials::Invalid;
        };
        if bool::from(presented.ct_eq(expected.as_bytes())) {
            Credentials::Valid
        } else {
            Credentials::Invalid
        }
    }

    /// Whether `presented` is the token (false when none is configured),
    /// compared in constant time.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|expected| bool::from(presented.as_bytes().ct_eq(expected.as_bytes())))
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

    fn local_hosts(allowed: &[&str]) -> HostPolicy {
        let allowed = allowed
            .iter()
            .map(|h| h.parse().expect("allowed host"))
            .collect();
        HostPolicy::new(AccessMode::Local, allowed)
    }

    #[test]
    fn origins() {
        let p = OriginPolicy {
            extra: vec!["https://ok.example".into()],
            hosts: local_hosts(&[]),
        };
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(p.check(&own, "http"), Ok(Site::SameOrigin));
        let bare = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(p.check(&bare, "http"), Ok(Site::Unproven));
        let fetch = headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(p.check(&fetch, "http"), Ok(Site::SameOrigin));
        // A navigation from outside the browser shows no origin.
        let typed = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "none")]);
        assert_eq!(p.check(&typed, "http"), Ok(Site::Unproven));
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
        // An allowed host's own origin is the daemon's.
        let named = OriginPolicy {
            extra: vec![],
            hosts: local_hosts(&["pagewire.example"]),
        };
        let own_name = headers(&[
            ("host", "pagewire.example:8080"),
            ("origin", "http://pagewire.example:8080"),
        ]);
        assert_eq!(named.check(&own_name, "http"), Ok(Site::SameOrigin));
        assert!(p.check(&own_name, "http").is_err());
    }

    #[test]
    fn referers() {
        let p = OriginPolicy {
            extra: vec!["https://ok.example".into()],
            hosts: local_hosts(&[]),
        };
        let with = |referer: &str| {
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
                ("referer", referer),
            ])
        };
        for own in [
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/a/b.html?x=1",
            "HTTP://127.0.0.1:8080/",
            "https://ok.example/page",
        ] {
            assert_eq!(p.check(&with(own), "http"), Ok(Site::SameOrigin), "{own}");
        }
        for (foreign, shown) in [
            (
                "http://evil.example/x?secret=1",
                "Referer: http://evil.example)",
            ),
            ("http://127.0.0.1:8081/", "Referer: http://127.0.0.1:8081)"),
            (
                "https://127.0.0.1:8080/",
                "Referer: https://127.0.0.1:8080)",
            ),
            (
                "http://127.0.0.1:8080.evil.example/",
                "Referer: http://127.0.0.1:8080.evil.example)",
            ),
            ("http://user@127.0.0.1:8080/", "not a URL"),
            ("/relative", "not a URL"),
            ("not a url", "not a URL"),
            ("file:///etc/passwd", "not a URL"),
        ] {
            let err = p.check(&with(foreign), "http").expect_err(foreign);
            assert!(err.contains(shown), "{foreign}: {err}");
            assert!(!err.contains("secret"), "only the origin is shown: {err}");
        }
    }

    #[test]
    fn host_matching() {
        let local = local_hosts(&["pagewire.example", "kiosk.lan:8443", "[2001:db8::1]"]);
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "localhost:1",
            "app.localhost:8080",
            "a.b.LOCALHOST",
            "127.0.0.1",
            "127.1.2.3:8080",
            "127.255.255.255:80",
            "[::1]",
            "[::1]:1",
            "[::ffff:127.0.0.1]:8080",
            "pagewire.example",
            "PageWire.Example:8080",
            "kiosk.lan:8443",
            "[2001:db8::1]:8080",
            "[2001:DB8::1]",
        ] {
            assert!(local.allows(host), "{host} is served");
        }
        for host in [
            "",
            ":8080",
            "evil.test",
            "evil.test:8080",
            "localhost.evil.test",
            "localhost.evil.test:8080",
            "127.0.0.1.evil.test",
            "127.0.0.1.evil.test:8080",
            "evil.localhost.test",
            ".localhost",
            "localhost.",
            "localhost:",
            "localhost:8080x",
            "localhost:99999",
            "localhost:8080:80",
            "10.0.0.1:80",
            "0.0.0.0:8080",
            "[fe80::1]:1",
            "[fe80::1%eth0]:8080",
            "[::1%lo]:8080",
            "[fe80::1%25eth0]",
            "[::1",
            "[::1]x",
            "::1",
            "user@localhost",
            "local host",
            "kiosk.lan",
            "kiosk.lan:8080",
            "sub.pagewire.example",
            "127.1",
        ] {
            assert!(!local.allows(host), "{host:?} is refused");
        }
        // Other modes: any well-formed host when none is configured...
        let public = HostPolicy::new(AccessMode::Public, vec![]);
        assert!(public.allows("evil.test:8080"));
        assert!(!public.allows("evil test"));
        // ...else the configured ones, and loopback.
        let public = HostPolicy::new(
            AccessMode::Private,
            vec!["pagewire.example".parse().expect("host")],
        );
        assert!(public.allows("pagewire.example:80"));
        assert!(public.allows("127.0.0.1:80"));
        assert!(!public.allows("evil.test:8080"));
        for bad in [
            "",
            "http://x",
            "x/y",
            "[zz]",
            "a..b",
            "x:",
            "x:y",
            "*.example.com",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "Kiosk.LAN:8443"
                .parse::<AllowedHost>()
                .expect("host")
                .to_string(),
            "kiosk.lan:8443"
        );
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\"\n\u{1b}[2J"), "a\"\\n\\u{1b}[2J");
        let long = "x".repeat(500);
        assert_eq!(shown(&long).len(), MAX_SHOWN + 3);
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
        // A proxy's own login is no attempt at the daemon's token.
        let basic = headers(&[("authorization", "Basic eDp5")]);
        assert_eq!(t.check(&basic), Credentials::Missing);
        let none = Token::new(None);
        assert_eq!(none.check(&basic), Credentials::Missing);
        assert_eq!(
            none.check(&headers(&[("authorization", "Bearer s3cret")])),
            Credentials::Invalid
        );
        assert!(!Token::new(Some(String::new())).is_set());
        assert_eq!(format!("{t:?}"), "Token(set)");
    }
}
