//! Who the client really is behind a reverse proxy (`--trusted-proxy`).
//!
//! A request that comes from a trusted proxy may say, in `Forwarded`
//! (RFC 7239) or else `X-Forwarded-For` and `X-Forwarded-Proto`, which
//! client it carries and over which scheme. The chain is read from the
//! right (the hop nearest this daemon): addresses of trusted proxies are
//! skipped, and the first other one is the client. From any other peer
//! the headers are not believed: its own address and this daemon's
//! scheme stand, and the request is marked as carrying forwarding it could
//! not prove ([`Seen::unproven_forwarding`]) so that it never gets the
//! operator rights a loopback client has without a token (a proxy on this
//! machine that is not declared would otherwise pass every client off as
//! local).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use super::access::canonical;

/// What the guard learnt about a request's client, for the handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The scheme the client used: `http` or `https`.
    pub(crate) scheme: &'static str,
    /// The request names a forwarded client that was not believed (its
    /// peer is no trusted proxy, or the header was malformed).
    pub(crate) unproven_forwarding: bool,
}

/// The client of a request, as far as it can be believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Client {
    /// Its address (port 0 when a proxy did not say).
    pub(crate) addr: SocketAddr,
    /// Its scheme, and whether unbelieved forwarding was present.
    pub(crate) seen: Seen,
}

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// One hop of a forwarding chain: the address it names, and the scheme.
#[derive(Debug, PartialEq, Eq)]
struct Hop {
    addr: Option<SocketAddr>,
    proto: Option<&'static str>,
}

/// The client of a request from `peer`, with `scheme` the daemon's own
/// (`http` or `https`), believing forwarding headers only from `trusted`.
pub(crate) fn client(
    peer: SocketAddr,
    scheme: &'static str,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Client {
    let forwarding = [&FORWARDED, &X_FORWARDED_FOR, &X_FORWARDED_PROTO]
        .into_iter()
        .any(|h| headers.contains_key(h));
    let own = Client {
        addr: peer,
        seen: Seen {
            scheme,
            unproven_forwarding: forwarding,
        },
    };
    if !forwarding || !is_trusted(peer.ip(), trusted) {
        return own;
    }
    let hops = if headers.contains_key(FORWARDED) {
        forwarded_hops(headers)
    } else {
        x_forwarded_hops(headers)
    };
    let Some(hops) = hops else {
        return own;
    };
    // From the right: the nearest hop first; proxies we trust are skipped.
    let chosen = hops
        .iter()
        .rev()
        .find(|hop| hop.addr.map_or(true, |a| !is_trusted(a.ip(), trusted)))
        .or(hops.first());
    let Some(hop) = chosen else {
        // Only X-Forwarded-Proto: the proxy itself is the client.
        let proto = last_proto(headers);
        return Client {
            addr: peer,
            seen: Seen {
                scheme: proto.unwrap_or(scheme),
                unproven_forwarding: false,
            },
        };
    };
    match hop.addr {
        Some(addr) => Client {
            addr,
            seen: Seen {
                scheme: hop.proto.unwrap_or(scheme),
                unproven_forwarding: false,
            },
        },
        // `unknown` or an obfuscated name: no address to go by.
        None => own,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// Every value of header `name`, its comma-separated items in order.
fn items<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Vec<&'a str>> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        out.extend(text.split(',').map(str::trim));
    }
    Some(out)
}

/// The hops of `Forwarded`, or None when it is malformed.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for element in items(headers, &FORWARDED)? {
        let mut hop = Hop {
            addr: None,
            proto: None,
        };
        for pair in element.split(';') {
            let (key, value) = pair.trim().split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"')?,
                None => value,
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "for" => hop.addr = node(value),
                "proto" => hop.proto = Some(proto(value)?),
                _ => {}
            }
        }
        hops.push(hop);
    }
    Some(hops)
}

/// The hops of `X-Forwarded-For`, with `X-Forwarded-Proto`'s scheme: the
/// one at the same place when both lists are as long, else the last.
fn x_forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let addrs = match headers.contains_key(X_FORWARDED_FOR) {
        true => items(headers, &X_FORWARDED_FOR)?,
        false => Vec::new(),
    };
    let protos = match headers.contains_key(X_FORWARDED_PROTO) {
        true => items(headers, &X_FORWARDED_PROTO)?
            .into_iter()
            .map(proto)
            .collect::<Option<Vec<_>>>()?,
        false => Vec::new(),
    };
    let same_length = protos.len() == addrs.len();
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let addr = Some(node(a)?);
            let proto = match same_length {
                true => protos.get(i).copied(),
                false => protos.last().copied(),
            };
            Some(Hop { addr, proto })
        })
        .collect()
}

/// The last scheme of `X-Forwarded-Proto`, if it is a known one.
fn last_proto(headers: &HeaderMap) -> Option<&'static str> {
    items(headers, &X_FORWARDED_PROTO)?
        .last()
        .and_then(|p| proto(p))
}

/// `http` or `https` (case aside), or None.
fn proto(value: &str) -> Option<&'static str> {
    if value.eq_ignore_ascii_case("https") {
        Some("https")
    } else if value.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// An address as a forwarding header writes it: `192.0.2.1`,
/// `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`;
/// None for `unknown`, an obfuscated name, or anything else.
fn node(value: &str) -> Option<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(SocketAddr::new(canonical(addr.ip()), addr.port()));
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(canonical(ip), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn untrusted_peers_are_themselves() {
        let peer = addr("127.0.0.1:5000");
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = client(peer, "http", &h, &nets(&["10.0.0.1/32"]));
        assert_eq!(c.addr, peer);
        assert_eq!(c.seen.scheme, "http");
        assert!(c.seen.unproven_forwarding);
        let plain = client(peer, "http", &HeaderMap::new(), &[]);
        assert!(!plain.seen.unproven_forwarding);
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let peer = addr("127.0.0.1:5000");
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        type Case<'a> = (&'a [(&'static str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("x-forwarded-for", "203.0.113.9")],
                "203.0.113.9:0",
                "http",
            ),
            (
                &[
                    ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
                    ("x-forwarded-proto", "https"),
                ],
                "203.0.113.9:0",
                "https",
            ),
            // A client that made up a first entry does not get it believed.
            (
                &[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2")],
                "203.0.113.9:0",
                "http",
            ),
            (
                &[("x-forwarded-for", "[2001:db8::1]:4711")],
                "[2001:db8::1]:4711",
                "http",
            ),
            (
                &[("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43")],
                "192.0.2.60:0",
                "https",
            ),
            (
                &[(
                    "forwarded",
                    "for=198.51.100.7, for=\"[2001:db8:cafe::17]:4711\";proto=http",
                )],
                "[2001:db8:cafe::17]:4711",
                "http",
            ),
            // Forwarded wins over the X- headers.
            (
                &[
                    ("forwarded", "for=192.0.2.1"),
                    ("x-forwarded-for", "192.0.2.2"),
                ],
                "192.0.2.1:0",
                "http",
            ),
            // Every hop a trusted proxy: the first one is the client.
            (
                &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")],
                "10.1.1.1:0",
                "http",
            ),
            // Only the scheme: the proxy itself is the client.
            (&[("x-forwarded-proto", "https")], "127.0.0.1:5000", "https"),
        ];
        for (pairs, want, scheme) in cases {
            let c = client(peer, "http", &headers(pairs), &trusted);
            assert_eq!((c.addr, c.seen.scheme), (addr(want), *scheme), "{pairs:?}");
            assert!(!c.seen.unproven_forwarding, "{pairs:?}");
        }
    }

    #[test]
    fn malformed_forwarding_is_not_believed() {
        let peer = addr("127.0.0.1:5000");
        let trusted = nets(&["127.0.0.1/32"]);
        for pairs in [
            &[("x-forwarded-for", "not an address")][..],
            &[("forwarded", "for")][..],
            &[("forwarded", "for=\"192.0.2.1")][..],
            &[("forwarded", "for=_hidden")][..],
            &[("forwarded", "for=unknown")][..],
            &[
                ("x-forwarded-for", "192.0.2.1"),
                ("x-forwarded-proto", "gopher"),
            ][..],
        ] {
            let c = client(peer, "https", &headers(pairs), &trusted);
            assert_eq!((c.addr, c.seen.scheme), (peer, "https"), "{pairs:?}");
            assert!(c.seen.unproven_forwarding, "{pairs:?}");
        }
    }
}
