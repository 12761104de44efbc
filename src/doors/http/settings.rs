//! The HTTP door's settings: its `serve` flags, which are also keys of the
//! configuration file (one declaration for both), and its share of
//! `[limits]`. See docs/CONFIG.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::access::{AccessMode, AddressPolicy, AllowedHost};
use super::server::ServerOptions;

/// Whether permessage-deflate is offered to pages unless configured (see
/// docs/PERFORMANCE.md for the figures behind it).
pub(crate) const DEFAULT_COMPRESSION: bool = true;

/// The default listen address.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// TCP connections allowed beyond the WebSocket limit in all, for requests
/// that are not WebSockets, when `max_tcp_connections` is not set.
const HTTP_HEADROOM: usize = 1024;
/// Likewise per address (a browser opens up to six per host).
const HTTP_HEADROOM_PER_IP: usize = 64;

/// What and how the HTTP door serves: flags of `pagewire serve`, and the
/// same keys at the top of the configuration file. (`display_order` keeps
/// `serve --help` in the order it always had, across the parts.)
#[derive(clap::Args, Deserialize, Serialize, Debug, Default, Clone)]
#[serde(default)]
pub(crate) struct HttpSettings {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", value_parser = socket_addr, display_order = 1)]
    pub(crate) listen: Option<String>,
    /// Serve this directory instead of the built-in demo site
    #[arg(long, value_name = "DIR", display_order = 2)]
    pub(crate) root: Option<PathBuf>,
    /// Who may connect: local (loopback), private, public, or acl
    #[arg(long, value_enum, value_name = "MODE", display_order = 5)]
    pub(crate) access: Option<AccessMode>,
    /// Admit this address range too; in acl mode, only these (repeatable)
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, display_order = 6)]
    #[serde(deserialize_with = "cidrs", serialize_with = "display_all")]
    pub(crate) allow: Vec<IpNet>,
    /// Bearer token required for operator commands over HTTP
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PAGEWIRE_TOKEN",
        hide_env_values = true,
        display_order = 7
    )]
    pub(crate) token: Option<String>,
    /// Allow pages of this origin too, e.g. https://example.com (repeatable)
    #[arg(long = "origin", value_name = "ORIGIN", display_order = 8)]
    pub(crate) origins: Vec<String>,
    /// Serve requests for this host name too, e.g. pagewire.example or
    /// kiosk.lan:8443 (repeatable); in modes other than local, only these
    /// and loopback names once one is given
    #[arg(long = "allowed-host", value_name = "HOST", display_order = 9)]
    pub(crate) allowed_hosts: Vec<String>,
    /// Serve dot-files and dot-directories of --root (.git/, .env)
    // An Option, so that a file's `true` stands when the flag is absent.
    #[arg(long, num_args = 0, default_missing_value = "true", display_order = 10)]
    pub(crate) serve_dotfiles: Option<bool>,
    /// Compress messages to pages that offer permessage-deflate, each
    /// broadcast once for all of them (--compression=false: never)
    // An Option, so that a file's value stands when the flag is absent.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", display_order = 11)]
    pub(crate) compression: Option<bool>,
    /// TLS certificate chain (PEM), to serve https and wss
    #[arg(long, value_name = "FILE", requires = "tls_key", display_order = 12)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert", display_order = 13)]
    pub(crate) tls_key: Option<PathBuf>,
    /// Read the bearer token from this file (its first line), e.g. a
    /// systemd credential
    // Not `conflicts_with = "token"`: a token given at a higher level
    // replaces a token file given at a lower one (see
    // `keep_the_highest_token`).
    #[arg(long, value_name = "FILE", display_order = 7)]
    pub(crate) token_file: Option<PathBuf>,
    /// Serve everything under this path, e.g. /status behind a reverse
    /// proxy that forwards /status/ (pages, ws.js, /ws, commands, metrics,
    /// health)
    #[arg(long, value_name = "/PREFIX", value_parser = parse_base_path, display_order = 14)]
    pub(crate) base_path: Option<String>,
    /// Take the client's address and scheme from X-Forwarded-For,
    /// X-Forwarded-Proto and Forwarded when the request comes from these
    /// proxies, e.g. 127.0.0.1/32 (repeatable)
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr, display_order = 15)]
    #[serde(deserialize_with = "cidrs", serialize_with = "display_all")]
    pub(crate) trusted_proxies: Vec<IpNet>,
}

impl HttpSettings {
    /// The address to listen on, as given (resolved when binding).
    pub(crate) fn listen(&self) -> String {
        self.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into())
    }

    /// Which client addresses are served.
    pub(crate) fn addresses(&self) -> anyhow::Result<AddressPolicy> {
        let mode = self.access.unwrap_or_default();
        if mode == AccessMode::Acl && self.allow.is_empty() {
            bail!("access mode acl needs at least one --allow CIDR");
        }
        Ok(AddressPolicy {
            mode,
            allow: self.allow.clone(),
        })
    }

    /// The extra origins, checked.
    pub(crate) fn origins(&self) -> anyhow::Result<Vec<String>> {
        for o in &self.origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                bail!(
                    "invalid origin '{o}'; expected scheme://host[:port], e.g. https://example.com"
                );
            }
        }
        Ok(self.origins.clone())
    }

    /// The host names served besides loopback ones.
    pub(crate) fn allowed_hosts(&self) -> anyhow::Result<Vec<AllowedHost>> {
        self.allowed_hosts
            .iter()
            .map(|h| h.parse::<AllowedHost>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The TLS certificate and key, both or neither.
    pub(crate) fn tls(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
        }
    }

    /// Of the token and the token file, keeps those given at the highest
    /// `level` (where each was given: higher for the flags, then the
    /// environment, then the file; `None` not given), so that a token from
    /// a flag or `PAGEWIRE_TOKEN` replaces the file's `token_file` and the
    /// other way round. Both given at one level stay, and
    /// [`HttpSettings::token`] refuses them.
    pub(crate) fn keep_the_highest_token(&mut self, token: Option<u8>, token_file: Option<u8>) {
        match token.cmp(&token_file) {
            std::cmp::Ordering::Less => self.token = None,
            std::cmp::Ordering::Greater => self.token_file = None,
            std::cmp::Ordering::Equal => {}
        }
    }

    /// The operator token: `token`, or the first line of `token_file`;
    /// `None` when neither is given. One given but empty is refused: an
    /// empty `PAGEWIRE_TOKEN=` must not turn the protection off unseen.
    pub(crate) fn token(&self) -> anyhow::Result<Option<String>> {
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => bail!("give the token or a token file, not both"),
            (Some(token), None) if token.is_empty() => bail!(
                "the token is empty (--token, PAGEWIRE_TOKEN or the file's token); give one, \
                 or none for no token"
            ),
            (Some(token), None) => token.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the token file {}: {e}", path.display())
                })?;
                let line = text.lines().next().unwrap_or("").trim();
                if line.is_empty() {
                    bail!("the token file {} is empty", path.display());
                }
                line.to_owned()
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(token))
    }

    /// The base path, `""` for none, else `/PREFIX` without a final `/`.
    pub(crate) fn base_path(&self) -> anyhow::Result<String> {
        match &self.base_path {
            None => Ok(String::new()),
            Some(path) => parse_base_path(path).map_err(|e| anyhow::anyhow!(e)),
        }
    }

    /// The web root, which must be a directory; `None` serves the demo.
    pub(crate) fn root(&self) -> anyhow::Result<Option<PathBuf>> {
        if let Some(r) = &self.root {
            if !r.is_dir() {
                bail!("web root {} is not a directory", r.display());
            }
        }
        Ok(self.root.clone())
    }
}

/// The accept loop's share of `[limits]`.
#[derive(clap::Args, serde::Serialize, Deserialize, Debug, Clone)]
#[serde(default)]
pub(crate) struct ServerLimits {
    /// Seconds a new client has to complete its TLS handshake and send a
    /// request head (and an idle keep-alive connection stays open).
    #[arg(id = "limits_handshake_timeout_secs", long = "limits-handshake-timeout-secs", value_name = "SECS", default_value_t = ServerLimits::default().handshake_timeout_secs, help_heading = "Limits ([limits] in the file)")]
    pub(crate) handshake_timeout_secs: u64,
    /// Seconds a request body may take to arrive after its head; default
    /// `handshake_timeout_secs`.
    #[arg(
        id = "limits_body_timeout_secs",
        long = "limits-body-timeout-secs",
        value_name = "SECS",
        help_heading = "Limits ([limits] in the file)"
    )]
    pub(crate) body_timeout_secs: Option<u64>,
    /// Most open TCP connections (HTTP and WebSocket) in all; default the
    /// WebSocket limit plus room for plain HTTP.
    #[arg(
        id = "limits_max_tcp_connections",
        long = "limits-max-tcp-connections",
        value_name = "N",
        help_heading = "Limits ([limits] in the file)"
    )]
    pub(crate) max_tcp_connections: Option<usize>,
    /// Most open TCP connections from one address; default the WebSocket
    /// limit per address plus room for plain HTTP.
    #[arg(
        id = "limits_max_tcp_connections_per_ip",
        long = "limits-max-tcp-connections-per-ip",
        value_name = "N",
        help_heading = "Limits ([limits] in the file)"
    )]
    pub(crate) max_tcp_connections_per_ip: Option<usize>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake_timeout_secs: ServerOptions::default().handshake_timeout.as_secs(),
            body_timeout_secs: None,
            max_tcp_connections: None,
            max_tcp_connections_per_ip: None,
        }
    }
}

impl ServerLimits {
    /// The accept loop's options, for a daemon that takes at most
    /// `websockets` WebSockets in all and `per_ip` from one address.
    pub(crate) fn options(
        &self,
        websockets: usize,
        per_ip: usize,
    ) -> anyhow::Result<ServerOptions> {
        if self.handshake_timeout_secs == 0 {
            bail!("limits.handshake_timeout_secs must be at least 1");
        }
        if self.body_timeout_secs == Some(0) {
            bail!("limits.body_timeout_secs must be at least 1");
        }
        let options = ServerOptions {
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            max_connections: self
                .max_tcp_connections
                .unwrap_or(websockets.saturating_add(HTTP_HEADROOM)),
            max_connections_per_ip: self
                .max_tcp_connections_per_ip
                .unwrap_or(per_ip.saturating_add(HTTP_HEADROOM_PER_IP)),
            body_timeout: Duration::from_secs(
                self.body_timeout_secs
                    .unwrap_or(self.handshake_timeout_secs),
            ),
            ..ServerOptions::default()
        };
        if options.max_connections == 0 || options.max_connections_per_ip == 0 {
            bail!("limits.max_tcp_connections and max_tcp_connections_per_ip must be at least 1");
        }
        Ok(options)
    }
}

/// `--listen` takes an address and port, not a host name (the file's
/// `listen` is resolved when binding).
fn socket_addr(s: &str) -> Result<String, String> {
    s.parse::<SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

/// A base path: `/` and segments of URL-safe characters, no `.` or `..`
/// segment, no final `/` (one is taken off); `/` alone is no base path.
pub(crate) fn parse_base_path(s: &str) -> Result<String, String> {
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    let bad = || {
        format!(
            "invalid base path '{s}'; expected /PREFIX, e.g. /status or /tools/status \
             (letters, digits and -._~ between slashes)"
        )
    };
    if trimmed.is_empty() && s == "/" {
        return Ok(String::new());
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Err(bad());
    };
    let segment_ok = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    };
    if rest.split('/').all(segment_ok) {
        Ok(trimmed.to_owned())
    } else {
        Err(bad())
    }
}

/// An address or a CIDR range, for `--allow` and `allow = [...]`.
pub(crate) fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        anyhow::anyhow!("invalid --allow '{s}'; expected an address or CIDR, e.g. 192.168.1.0/24")
    })
}

/// `allow = [...]` in the file, each entry read as `--allow` reads it.
fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_cidr(s).map_err(serde::de::Error::custom))
        .collect()
}

/// A list of ranges as the file writes them (for `--print-config`).
fn display_all<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths() {
        for (given, want) in [
            ("/status", "/status"),
            ("/status/", "/status"),
            ("/a/b-c.d_e~", "/a/b-c.d_e~"),
            ("/", ""),
        ] {
            assert_eq!(parse_base_path(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "", "status", "//", "/a//b", "/a/../b", "/.", "/a b", "/a?b", "/%2e",
        ] {
            assert!(parse_base_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("127.0.0.2").is_ok());
        assert!(parse_cidr("nope").is_err());
    }
}
