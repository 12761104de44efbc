//! Settings: the `serve` flags and the TOML configuration file, merged into
//! one resolved [`Settings`]. Every flag can also be set in the file; a flag
//! given on the command line wins over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use serde::Deserialize;

use crate::base::codec::Limits;
use crate::doors::http::access::{AccessMode, AddressPolicy, AllowedHost};
use crate::doors::http::server::ServerOptions;
use crate::doors::page::driver::ConnLimits;
use crate::engine::actions::ActionConfig;
use crate::engine::backplane::redis::ClusterConfig;
use crate::engine::hub::{HubLimits, OutboxLimits};

/// The default listen address.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Flags of `pagewire serve`.
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Serve this directory instead of the built-in demo site
    #[arg(long, value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
    /// Read settings from this TOML file (flags win over it)
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The control socket for the CLI [default: $XDG_RUNTIME_DIR/pagewire.sock,
    /// else /run/pagewire/pagewire.sock for root, /tmp/pagewire-UID/pagewire.sock
    /// for other users]
    #[arg(long, value_name = "PATH", env = "PAGEWIRE_CONTROL")]
    pub(crate) control: Option<PathBuf>,
    /// Who may connect: local (loopback), private, public, or acl
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) access: Option<AccessMode>,
    /// Admit this address range too; in acl mode, only these (repeatable)
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub(crate) allow: Vec<IpNet>,
    /// Bearer token required for operator commands over HTTP
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PAGEWIRE_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// Allow pages of this origin too, e.g. https://example.com (repeatable)
    #[arg(long, value_name = "ORIGIN")]
    pub(crate) origin: Vec<String>,
    /// Serve requests for this host name too, e.g. pagewire.example or
    /// kiosk.lan:8443 (repeatable); in modes other than local, only these
    /// and loopback names once one is given
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub(crate) allowed_host: Vec<String>,
    /// Serve dot-files and dot-directories of --root (.git/, .env)
    #[arg(long)]
    pub(crate) serve_dotfiles: bool,
    /// Join a cluster through this Redis server
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// TLS certificate chain (PEM), to serve https and wss
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

/// The configuration file, as written. See docs/CONFIG.md.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// As `--listen`.
    pub(crate) listen: Option<String>,
    /// As `--root`; relative to the file's directory.
    pub(crate) root: Option<PathBuf>,
    /// As `--control`; relative to the file's directory.
    pub(crate) control: Option<PathBuf>,
    /// As `--access`.
    pub(crate) access: Option<AccessMode>,
    /// As `--allow`.
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// As `--token`.
    pub(crate) token: Option<String>,
    /// As `--origin`.
    #[serde(default)]
    pub(crate) origins: Vec<String>,
    /// As `--allowed-host`.
    #[serde(default)]
    pub(crate) allowed_hosts: Vec<String>,
    /// As `--serve-dotfiles`.
    #[serde(default)]
    pub(crate) serve_dotfiles: bool,
    /// As `--redis`.
    pub(crate) redis: Option<String>,
    /// As `--tls-cert`.
    pub(crate) tls_cert: Option<PathBuf>,
    /// As `--tls-key`.
    pub(crate) tls_key: Option<PathBuf>,
    /// Size and count limits.
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
    /// Ping/pong settings.
    #[serde(default)]
    pub(crate) heartbeat: HeartbeatConfig,
    /// What pages may do.
    #[serde(default)]
    pub(crate) pages: PagesConfig,
    /// Configured actions, by name.
    #[serde(default)]
    pub(crate) actions: BTreeMap<String, ActionConfig>,
    /// Cluster settings, used with `redis`.
    #[serde(default)]
    pub(crate) cluster: ClusterConfig,
}

/// `[limits]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    /// Largest frame or message a page may send, in bytes (close 1009).
    pub(crate) max_message_bytes: usize,
    /// Outgoing queue per connection, in bytes (close 4001 when full).
    pub(crate) outbox_bytes: usize,
    /// Outgoing queue per connection, in frames.
    pub(crate) outbox_frames: usize,
    /// Most WebSocket connections in all.
    pub(crate) max_connections: usize,
    /// Most WebSocket connections from one address; default an eighth of
    /// `max_connections`.
    pub(crate) max_connections_per_ip: Option<usize>,
    /// Most names one connection may register.
    pub(crate) max_names_per_connection: usize,
    /// Most actions running at once; `run` is refused beyond it.
    pub(crate) max_running_actions: usize,
    /// Seconds a new client has to complete its TLS handshake and send a
    /// request head (and an idle keep-alive connection stays open).
    pub(crate) handshake_timeout_secs: u64,
    /// Seconds a request body may take to arrive after its head; default
    /// `handshake_timeout_secs`.
    pub(crate) body_timeout_secs: Option<u64>,
    /// Most open TCP connections (HTTP and WebSocket) in all; default
    /// `max_connections` plus room for plain HTTP.
    pub(crate) max_tcp_connections: Option<usize>,
    /// Most open TCP connections from one address; default
    /// `max_connections_per_ip` plus room for plain HTTP.
    pub(crate) max_tcp_connections_per_ip: Option<usize>,
    /// Bytes held for frames and messages not fully arrived, all pages
    /// together; the page that would need more is closed with 1013.
    pub(crate) max_partial_bytes: usize,
    /// Seconds a page has to finish a frame (a fragmented message: all of
    /// it) once it started sending it; then it is closed with 1008.
    pub(crate) partial_timeout_secs: u64,
}

/// TCP connections allowed beyond the WebSocket limit in all, for requests
/// that are not WebSockets, when `max_tcp_connections` is not set.
const HTTP_HEADROOM: usize = 1024;
/// Likewise per address (a browser opens up to six per host).
const HTTP_HEADROOM_PER_IP: usize = 64;
/// One address may hold at most this share of the connections (1/8) by
/// default, so that no single client can take most of them.
const PER_IP_SHARE: usize = 8;

impl Default for LimitsConfig {
    fn default() -> Self {
        let hub = HubLimits::default();
        LimitsConfig {
            max_message_bytes: Limits::default().max_message,
            outbox_bytes: hub.outbox.max_bytes,
            outbox_frames: hub.outbox.max_frames,
            max_connections: hub.max_connections,
            max_connections_per_ip: None,
            max_names_per_connection: hub.max_names_per_connection,
            max_running_actions: crate::engine::actions::DEFAULT_MAX_RUNNING,
            handshake_timeout_secs: ServerOptions::default().handshake_timeout.as_secs(),
            body_timeout_secs: None,
            max_tcp_connections: None,
            max_tcp_connections_per_ip: None,
            max_partial_bytes: crate::doors::page::budget::DEFAULT_MAX_PARTIAL_BYTES,
            partial_timeout_secs: crate::doors::page::driver::DEFAULT_PARTIAL_TIMEOUT.as_secs(),
        }
    }
}

/// `[heartbeat]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HeartbeatConfig {
    /// Seconds between pings.
    pub(crate) interval_secs: u64,
    /// Seconds of silence after which a page is dropped.
    pub(crate) timeout_secs: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval_secs: 30,
            timeout_secs: 75,
        }
    }
}

/// `[pages]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PagesConfig {
    /// Commands a page may run over its WebSocket (or /shell without
    /// operator rights), by name: "ws register", "run", "ws write", ...
    pub(crate) allow: Vec<String>,
}

impl Default for PagesConfig {
    fn default() -> Self {
        PagesConfig {
            allow: vec!["ws register".into(), "run".into()],
        }
    }
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where to listen.
    pub(crate) listen: String,
    /// Web root, or None for the demo.
    pub(crate) root: Option<PathBuf>,
    /// Control socket path.
    pub(crate) control: PathBuf,
    /// Address policy.
    pub(crate) addresses: AddressPolicy,
    /// Extra allowed origins.
    pub(crate) origins: Vec<String>,
    /// Host names served besides loopback ones (`--allowed-host`).
    pub(crate) allowed_hosts: Vec<AllowedHost>,
    /// Whether dot-files of the web root are served.
    pub(crate) serve_dotfiles: bool,
    /// Operator token.
    pub(crate) token: Option<String>,
    /// Redis URL for a cluster.
    pub(crate) redis: Option<String>,
    /// How this node takes part in the cluster.
    pub(crate) cluster: ClusterConfig,
    /// TLS certificate and key.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// Hub limits.
    pub(crate) hub: HubLimits,
    /// Connection limits.
    pub(crate) conn: ConnLimits,
    /// The accept loop: handshake timeout, TCP connection limits.
    pub(crate) server: ServerOptions,
    /// Ping interval.
    pub(crate) ping_interval: Duration,
    /// Silence after which a page is dropped.
    pub(crate) ping_timeout: Duration,
    /// Commands pages may run.
    pub(crate) page_commands: Vec<String>,
    /// Configured actions.
    pub(crate) actions: BTreeMap<String, ActionConfig>,
    /// Most actions running at once.
    pub(crate) max_running_actions: usize,
}

/// Checks one `[actions.NAME]` table and makes its relative paths
/// relative to the configuration file's directory `base`, as `root` and
/// `control` are, so that the daemon's own working directory does not
/// matter. A bare program name is left for PATH.
fn resolve_action(
    mut action: ActionConfig,
    name: &str,
    base: Option<&Path>,
) -> anyhow::Result<ActionConfig> {
    action.check(name)?;
    if action.program.contains('/') {
        action.program = relative_to(base, PathBuf::from(&action.program))
            .to_string_lossy()
            .into_owned();
    }
    action.cwd = action.cwd.map(|p| relative_to(base, p));
    Ok(action)
}

fn relative_to(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

impl Settings {
    /// Merges flags over the configuration file (if any) over defaults.
    pub(crate) fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let (file, base) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let file: FileConfig = toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                (file, path.parent().map(Path::to_path_buf))
            }
            None => (FileConfig::default(), None),
        };
        let base = base.as_deref();
        let allow = if args.allow.is_empty() {
            file.allow
                .iter()
                .map(|a| parse_cidr(a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("config: {e}"))?
        } else {
            args.allow.clone()
        };
        let mode = args.access.or(file.access).unwrap_or_default();
        if mode == AccessMode::Acl && allow.is_empty() {
            bail!("access mode acl needs at least one --allow CIDR");
        }
        let origins = if args.origin.is_empty() {
            file.origins
        } else {
            args.origin.clone()
        };
        for o in &origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                bail!(
                    "invalid origin '{o}'; expected scheme://host[:port], e.g. https://example.com"
                );
            }
        }
        let allowed_hosts = if args.allowed_host.is_empty() {
            &file.allowed_hosts
        } else {
            &args.allowed_host
        }
        .iter()
        .map(|h| h.parse::<AllowedHost>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
        let tls = match (
            args.tls_cert
                .clone()
                .or(file.tls_cert.map(|p| relative_to(base, p))),
            args.tls_key
                .clone()
                .or(file.tls_key.map(|p| relative_to(base, p))),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
        };
        let l = &file.limits;
        if l.max_message_bytes < 1024 {
            bail!("limits.max_message_bytes must be at least 1024");
        }
        let max_connections_per_ip = l
            .max_connections_per_ip
            .unwrap_or((l.max_connections / PER_IP_SHARE).max(1));
        let hub = HubLimits {
            outbox: OutboxLimits {
                max_bytes: l.outbox_bytes,
                max_frames: l.outbox_frames,
            },
            max_connections: l.max_connections,
            max_connections_per_ip,
            max_names_per_connection: l.max_names_per_connection,
        };
        if l.max_partial_bytes < l.max_message_bytes {
            bail!("limits.max_partial_bytes must be at least max_message_bytes");
        }
        if l.partial_timeout_secs == 0 {
            bail!("limits.partial_timeout_secs must be at least 1");
        }
        let conn = ConnLimits {
            frames: Limits {
                max_frame: l.max_message_bytes,
                max_message: l.max_message_bytes,
            },
            partial_timeout: Duration::from_secs(l.partial_timeout_secs),
            // One per daemon start, shared by all its pages.
            partial_budget: crate::doors::page::budget::PartialBudget::leak(l.max_partial_bytes),
            ..ConnLimits::default()
        };
        if l.max_running_actions == 0 {
            bail!("limits.max_running_actions must be at least 1");
        }
        let max_running_actions = l.max_running_actions;
        let mut actions = BTreeMap::new();
        for (name, action) in file.actions {
            let action = resolve_action(action, &name, base)?;
            actions.insert(name, action);
        }
        if l.handshake_timeout_secs == 0 {
            bail!("limits.handshake_timeout_secs must be at least 1");
        }
        if l.body_timeout_secs == Some(0) {
            bail!("limits.body_timeout_secs must be at least 1");
        }
        let server = ServerOptions {
            handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
            max_connections: l
                .max_tcp_connections
                .unwrap_or(l.max_connections.saturating_add(HTTP_HEADROOM)),
            max_connections_per_ip: l
                .max_tcp_connections_per_ip
                .unwrap_or(max_connections_per_ip.saturating_add(HTTP_HEADROOM_PER_IP)),
            body_timeout: Duration::from_secs(
                l.body_timeout_secs.unwrap_or(l.handshake_timeout_secs),
            ),
            ..ServerOptions::default()
        };
        if server.max_connections == 0 || server.max_connections_per_ip == 0 {
            bail!("limits.max_tcp_connections and max_tcp_connections_per_ip must be at least 1");
        }
        let hb = &file.heartbeat;
        if hb.interval_secs == 0 || hb.timeout_secs <= hb.interval_secs {
            bail!("heartbeat: interval_secs must be positive and timeout_secs larger than it");
        }
        file.cluster.check()?;
        let root = args
            .root
            .clone()
            .or(file.root.map(|p| relative_to(base, p)));
        if let Some(r) = &root {
            if !r.is_dir() {
                bail!("web root {} is not a directory", r.display());
            }
        }
        Ok(Settings {
            listen: match (args.listen, file.listen) {
                (Some(addr), _) => addr.to_string(),
                (None, Some(text)) => text,
                (None, None) => DEFAULT_LISTEN.into(),
            },
            root,
            control: args
                .control
                .clone()
                .or(file.control.map(|p| relative_to(base, p)))
                .unwrap_or_else(crate::doors::control::default_path),
            addresses: AddressPolicy { mode, allow },
            origins,
            allowed_hosts,
            serve_dotfiles: args.serve_dotfiles || file.serve_dotfiles,
            token: args.token.clone().or(file.token).filter(|t| !t.is_empty()),
            redis: args.redis.clone().or(file.redis),
            cluster: file.cluster,
            tls,
            hub,
            conn,
            server,
            ping_interval: Duration::from_secs(hb.interval_secs),
            ping_timeout: Duration::from_secs(hb.timeout_secs),
            page_commands: file.pages.allow,
            actions,
            max_running_actions,
        })
    }

    /// The listen address, resolved.
    pub(crate) fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.listen
            .to_socket_addrs()
            .with_context(|| format!("invalid listen address '{}'", self.listen))?
            .next()
            .with_context(|| format!("listen address '{}' resolves to nothing", self.listen))
    }
}

fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        anyhow::anyhow!("invalid --allow '{s}'; expected an address or CIDR, e.g. 192.168.1.0/24")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = r#"
            listen = "0.0.0.0:8080"
            access = "private"
            allow = ["203.0.113.7"]
            [limits]
            outbox_bytes = 65536
            [pages]
            allow = ["ws register", "run", "ws write"]
            [actions.uptime]
            program = "uptime"
            timeout_secs = 5
        "#;
        let file: FileConfig = toml::from_str(text).expect("parses");
        assert_eq!(file.access, Some(AccessMode::Private));
        assert_eq!(file.limits.outbox_bytes, 65536);
        assert_eq!(file.actions["uptime"].program, "uptime");
        assert_eq!(file.cluster, ClusterConfig::default());
        let file: FileConfig =
            toml::from_str("[cluster]\nlease_secs = 2\nindex_block = 8").expect("parses");
        assert_eq!((file.cluster.lease_secs, file.cluster.index_block), (2, 8));
        assert!(file.cluster.check().is_ok());
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }

    #[test]
    fn actions_resolve_relative_to_the_file() {
        let text = r#"
            [actions.build]
            program = "./scripts/build.sh"
            cwd = "work"
            [actions.up]
            program = "uptime"
        "#;
        let file: FileConfig = toml::from_str(text).expect("parses");
        let base = Path::new("/etc/pagewire");
        let mut actions = file.actions.into_iter();
        let (name, build) = actions.next().expect("build");
        let build = resolve_action(build, &name, Some(base)).expect("valid");
        assert_eq!(build.program, "/etc/pagewire/./scripts/build.sh");
        assert_eq!(build.cwd.as_deref(), Some(Path::new("/etc/pagewire/work")));
        let (name, up) = actions.next().expect("up");
        assert_eq!(
            resolve_action(up, &name, Some(base))
                .expect("valid")
                .program,
            "uptime"
        );
    }

    #[test]
    fn bad_actions_are_refused() {
        let action = |program: &str, timeout_secs| ActionConfig {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            inherit_env: Vec::new(),
            timeout_secs,
            page_args: false,
            page_dash_args: false,
        };
        for name in [
            "",
            "--to",
            "-x",
            "two words",
            "tab\there",
            "1up",
            "ünï",
            "a\u{202e}b",
        ] {
            let e = resolve_action(action("true", None), name, None);
            assert!(e.is_err(), "{name:?}");
        }
        let e = resolve_action(action("true", None), "1up", None).expect_err("refused");
        assert!(
            e.to_string().contains(crate::base::command::NAME_RULE),
            "{e}"
        );
        assert!(resolve_action(action("true", None), "up-2.b:c_D", None).is_ok());
        assert!(resolve_action(action("", None), "a", None).is_err());
        assert!(resolve_action(action("true", Some(0)), "a", None).is_err());
        assert!(resolve_action(action("true", Some(1)), "a", None).is_ok());
        let dashes = ActionConfig {
            page_dash_args: true,
            ..action("echo", None)
        };
        let e = resolve_action(dashes.clone(), "a", None).expect_err("dashes alone");
        assert_eq!(
            e.to_string(),
            "actions.a: page_dash_args = true needs page_args = true"
        );
        let both = ActionConfig {
            page_args: true,
            ..dashes
        };
        assert!(resolve_action(both, "a", None).is_ok());
        for bad in ["", "A=B", "PAGEWIRE_TOKEN"] {
            let inherit = ActionConfig {
                inherit_env: vec!["HOME".into(), bad.into()],
                ..action("env", None)
            };
            assert!(resolve_action(inherit, "a", None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn per_address_limits_and_the_body_timeout_follow_the_totals() {
        let s = Settings::resolve(&ServeArgs::default()).expect("defaults");
        assert_eq!(s.hub.max_connections_per_ip, 18_000 / 8);
        assert_eq!(s.server.max_connections, 18_000 + 1024);
        assert_eq!(s.server.max_connections_per_ip, 18_000 / 8 + 64);
        assert_eq!(s.server.body_timeout, s.server.handshake_timeout);
        assert!(s.allowed_hosts.is_empty() && !s.serve_dotfiles);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pagewire.toml");
        std::fs::write(
            &path,
            "allowed_hosts = [\"kiosk.lan\"]\nserve_dotfiles = true\n[limits]\n\
             max_connections = 40\nhandshake_timeout_secs = 30\nbody_timeout_secs = 3\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).expect("valid");
        assert_eq!(s.hub.max_connections_per_ip, 5);
        assert_eq!(s.server.max_connections_per_ip, 5 + 64);
        assert_eq!(s.server.body_timeout, Duration::from_secs(3));
        assert_eq!(s.allowed_hosts, ["kiosk.lan".parse().expect("host")]);
        assert!(s.serve_dotfiles);

        let args = ServeArgs {
            allowed_host: vec!["http://kiosk.lan/".into()],
            ..ServeArgs::default()
        };
        let err = Settings::resolve(&args).expect_err("not a host");
        assert!(err.to_string().contains("invalid allowed host"), "{err}");
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("127.0.0.2").is_ok());
        assert!(parse_cidr("nope").is_err());
    }
}
