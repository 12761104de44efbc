//! The HTTP door's settings: its `serve` flags, which are also keys of the
//! configuration file (one declaration for both), and its share of
//! `[limits]`. See docs/CONFIG.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::access::{AccessMode, AddressPolicy, AllowedHost};
use super::server::ServerOptions;

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
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
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
    #[serde(deserialize_with = "cidrs")]
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
    /// TLS certificate chain (PEM), to serve https and wss
    #[arg(long, value_name = "FILE", requires = "tls_key", display_order = 12)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert", display_order = 13)]
    pub(crate) tls_key: Option<PathBuf>,
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
#[derive(Deserialize, Debug, Clone)]
#[serde(default)]
pub(crate) struct ServerLimits {
    /// Seconds a new client has to complete its TLS handshake and send a
    /// request head (and an idle keep-alive connection stays open).
    pub(crate) handshake_timeout_secs: u64,
    /// Seconds a request body may take to arrive after its head; default
    /// `handshake_timeout_secs`.
    pub(crate) body_timeout_secs: Option<u64>,
    /// Most open TCP connections (HTTP and WebSocket) in all; default the
    /// WebSocket limit plus room for plain HTTP.
    pub(crate) max_tcp_connections: Option<usize>,
    /// Most open TCP connections from one address; default the WebSocket
    /// limit per address plus room for plain HTTP.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("127.0.0.2").is_ok());
        assert!(parse_cidr("nope").is_err());
    }
}
