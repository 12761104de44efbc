//! The configuration: each part of the daemon declares its own settings
//! (a struct that is both its `serve` flags and its keys in the TOML file),
//! and this module only composes them, reads the file, lets the flags win,
//! and resolves the whole into [`Settings`].
//!
//! | part | flags and top-level keys | tables |
//! |---|---|---|
//! | HTTP door (`doors::http::settings`) | `listen`, `root`, `access`, `allow`, `token`, `origins`, `allowed_hosts`, `serve_dotfiles`, `tls_*` | its share of `[limits]` |
//! | control door | `control` | |
//! | Redis backplane | `redis` | `[cluster]` |
//! | hub | | its share of `[limits]`, `[heartbeat]` |
//! | page door | | its share of `[limits]` |
//! | executor | | `[pages]` |
//! | HTTP door's `/metrics` | | `[metrics]` |
//! | actions | | its share of `[limits]`, `[actions.NAME]` |
//!
//! A flag given on the command line, or its environment variable where it
//! names one (`env = ...` on the flag), wins over the file: clap sets on
//! the file's values only what was given
//! (`FromArgMatches::update_from_arg_matches`). Another source between
//! them (more `PAGEWIRE_*` variables) is one `env` attribute per flag.
//! `app::file` reads the file, each error at its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::FromArgMatches as _;

use super::file;
use crate::doors::control::ControlSettings;
use crate::doors::http::access::{AddressPolicy, AllowedHost};
use crate::doors::http::metrics::MetricsSettings;
use crate::doors::http::server::ServerOptions;
use crate::doors::http::settings::{HttpSettings, ServerLimits};
use crate::doors::page::driver::{ConnLimits, PageLimits};
use crate::engine::actions::{ActionConfig, ActionLimits};
use crate::engine::backplane::redis::{ClusterConfig, RedisSettings};
use crate::engine::exec::PagesSettings;
use crate::engine::hub::{HeartbeatSettings, HubLimits, HubSettings};

/// `pagewire serve`'s flags and the configuration file, in one: each part's
/// settings, its flags flattened into the command line, its keys read from
/// the file (`app::file`).
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct ServeConfig {
    /// The HTTP door's flags and keys.
    #[command(flatten)]
    pub(crate) http: HttpSettings,
    /// Read settings from this TOML file (flags win over it)
    #[arg(long, value_name = "FILE", display_order = 3)]
    pub(crate) config: Option<PathBuf>,
    /// The control socket.
    #[command(flatten)]
    pub(crate) control: ControlSettings,
    /// The cluster to join, if any.
    #[command(flatten)]
    pub(crate) redis: RedisSettings,
    /// `[limits]`.
    #[arg(skip)]
    pub(crate) limits: LimitsTable,
    /// `[heartbeat]`.
    #[arg(skip)]
    pub(crate) heartbeat: HeartbeatSettings,
    /// `[pages]`.
    #[arg(skip)]
    pub(crate) pages: PagesSettings,
    /// `[actions.NAME]`, by name.
    #[arg(skip)]
    pub(crate) actions: BTreeMap<String, ActionConfig>,
    /// `[cluster]`, used with `redis`.
    #[arg(skip)]
    pub(crate) cluster: ClusterConfig,
    /// `[metrics]`.
    #[arg(skip)]
    pub(crate) metrics: MetricsSettings,
}

/// `[limits]`: one table in the file, each part's share declared by it.
#[derive(Debug, Default, Clone)]
pub(crate) struct LimitsTable {
    /// Connections, names and outgoing queues.
    pub(crate) hub: HubSettings,
    /// What a page may send.
    pub(crate) page: PageLimits,
    /// The accept loop.
    pub(crate) server: ServerLimits,
    /// Runs at once.
    pub(crate) actions: ActionLimits,
}

impl ServeConfig {
    /// The file named by `--config` (if any) with the flags in `matches`
    /// set over it. Paths in the file are relative to its directory.
    pub(crate) fn load(matches: &clap::ArgMatches) -> anyhow::Result<ServeConfig> {
        let flags = ServeConfig::from_arg_matches(matches)?;
        let Some(path) = &flags.config else {
            return Ok(flags);
        };
        let mut config = ServeConfig::read(path)?;
        config.update_from_arg_matches(matches)?;
        Ok(config)
    }

    /// The configuration file's `text`, each part read straight from it (see
    /// `app::file`: every error keeps its line).
    pub(crate) fn parse(text: &str) -> Result<ServeConfig, toml::de::Error> {
        file::check_keys(text)?;
        let tables: file::Tables = toml::from_str(text)?;
        Ok(ServeConfig {
            http: toml::from_str(text)?,
            config: None,
            control: toml::from_str(text)?,
            redis: toml::from_str(text)?,
            limits: LimitsTable {
                hub: file::limits(text)?,
                page: file::limits(text)?,
                server: file::limits(text)?,
                actions: file::limits(text)?,
            },
            heartbeat: tables.heartbeat,
            pages: tables.pages,
            actions: tables.actions,
            cluster: tables.cluster,
            metrics: tables.metrics,
        })
    }

    /// The file at `path` alone, its relative paths made relative to its
    /// directory, as if given with `--config` and no other flag.
    pub(crate) fn read(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = ServeConfig::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config.config = Some(path.to_path_buf());
        if let Some(base) = path.parent() {
            for p in [
                &mut config.http.root,
                &mut config.http.tls_cert,
                &mut config.http.tls_key,
                &mut config.control.path,
            ] {
                *p = p.take().map(|p| relative_to(Some(base), p));
            }
        }
        Ok(config)
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
    /// Names whose pages `/metrics` counts.
    pub(crate) metric_names: Vec<String>,
}

impl Settings {
    /// Checks every part of `config` and resolves it.
    pub(crate) fn resolve(config: ServeConfig) -> anyhow::Result<Settings> {
        let http = &config.http;
        let addresses = http.addresses()?;
        let origins = http.origins()?;
        let allowed_hosts = http.allowed_hosts()?;
        let tls = http.tls()?;
        let limits = &config.limits;
        let hub = limits.hub.limits();
        let conn = limits.page.conn_limits()?;
        let max_running_actions = limits.actions.check()?;
        let base = config.config.as_deref().and_then(Path::parent);
        let mut actions = BTreeMap::new();
        for (name, action) in config.actions {
            let action = resolve_action(action, &name, base)?;
            actions.insert(name, action);
        }
        let server = limits
            .server
            .options(hub.max_connections, hub.max_connections_per_ip)?;
        let (ping_interval, ping_timeout) = config.heartbeat.check()?;
        config.cluster.check()?;
        let metric_names = config.metrics.names()?;
        Ok(Settings {
            listen: http.listen(),
            root: http.root()?,
            control: config.control.path(),
            addresses,
            origins,
            allowed_hosts,
            serve_dotfiles: http.serve_dotfiles.unwrap_or(false),
            token: http.token.clone().filter(|t| !t.is_empty()),
            redis: config.redis.redis,
            cluster: config.cluster,
            tls,
            hub,
            conn,
            server,
            ping_interval,
            ping_timeout,
            page_commands: config.pages.allow,
            actions,
            max_running_actions,
            metric_names,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doors::http::access::AccessMode;

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
        let file = ServeConfig::parse(text).expect("parses");
        assert_eq!(file.http.access, Some(AccessMode::Private));
        assert_eq!(file.limits.hub.outbox_bytes, 65536);
        assert_eq!(file.actions["uptime"].program, "uptime");
        assert_eq!(file.cluster, ClusterConfig::default());
        let file =
            ServeConfig::parse("[cluster]\nlease_secs = 2\nindex_block = 8").expect("parses");
        assert_eq!((file.cluster.lease_secs, file.cluster.index_block), (2, 8));
        assert!(file.cluster.check().is_ok());
        assert!(ServeConfig::parse("bogus = 1").is_err());
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
        let file = ServeConfig::parse(text).expect("parses");
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
        let s = Settings::resolve(ServeConfig::default()).expect("defaults");
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
        let config = ServeConfig::read(&path).expect("readable");
        let s = Settings::resolve(config).expect("valid");
        assert_eq!(s.hub.max_connections_per_ip, 5);
        assert_eq!(s.server.max_connections_per_ip, 5 + 64);
        assert_eq!(s.server.body_timeout, Duration::from_secs(3));
        assert_eq!(s.allowed_hosts, ["kiosk.lan".parse().expect("host")]);
        assert!(s.serve_dotfiles);

        let config = ServeConfig {
            http: HttpSettings {
                allowed_hosts: vec!["http://kiosk.lan/".into()],
                ..HttpSettings::default()
            },
            ..ServeConfig::default()
        };
        let err = Settings::resolve(config).expect_err("not a host");
        assert!(err.to_string().contains("invalid allowed host"), "{err}");
    }
}
