//! The configuration: each part of the daemon declares its own settings
//! (a struct that is both its `serve` flags and its keys in the TOML file),
//! and this module only composes them, reads the file, lets the flags win,
//! and resolves the whole into [`Settings`].
//!
//! | part | flags and top-level keys | tables |
//! |---|---|---|
//! | HTTP door (`doors::http::settings`) | `listen`, `root`, `access`, `allow`, `token`, `origins`, `allowed_hosts`, `serve_dotfiles`, `compression`, `tls_*` | its share of `[limits]` |
//! | control door | `control` | |
//! | Redis backplane | `redis` | `[cluster]` |
//! | hub | | its share of `[limits]`, `[heartbeat]` |
//! | page door | | its share of `[limits]` |
//! | executor | | `[pages]` |
//! | what the daemon remembers | `state_dir` | `[state]` |
//! | HTTP door's `/metrics` | | `[metrics]` |
//! | actions | | its share of `[limits]`, `[actions.NAME]` |
//!
//! Every setting but `[actions.NAME]` is also a flag and an environment
//! variable, from its one declaration: the flag is the key's path with
//! `-` (`listen` is `--listen`, `[limits] max_connections` is
//! `--limits-max-connections`), the variable `PAGEWIRE_` and the flag's
//! name in capitals with `_` (`PAGEWIRE_LIMITS_MAX_CONNECTIONS`), added to
//! every flag in one place ([`with_env`]). A flag given on the command
//! line wins, then its variable, then the file, then the default: clap
//! sets on the file's values only what came from the command line or the
//! environment (`FromArgMatches::update_from_arg_matches`, after the
//! values clap filled in from defaults are cleared, [`given_only`]).
//! `app::file` reads the file, each error at its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::FromArgMatches as _;
use serde::Serialize;

use super::file;
use crate::base::logline::{LogFormat, LogSettings};
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
use crate::engine::remember::{StateConfig, StateSettings};

/// `pagewire serve`'s flags and the configuration file, in one: each part's
/// settings, its flags flattened into the command line, its keys read from
/// the file (`app::file`).
#[derive(clap::Args, Serialize, Debug, Default, Clone)]
pub(crate) struct ServeConfig {
    /// The HTTP door's flags and keys.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) http: HttpSettings,
    /// Read settings from this TOML file (flags and PAGEWIRE_* variables
    /// win over it)
    #[arg(long, value_name = "FILE", display_order = 3)]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective settings (flags, environment, file, defaults)
    /// as a configuration file, secrets hidden, and exit
    #[arg(long, display_order = 3)]
    #[serde(skip)]
    pub(crate) print_config: bool,
    /// The control socket.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) control: ControlSettings,
    /// The cluster to join, if any.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) redis: RedisSettings,
    /// How the daemon writes its log.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) log: LogSettings,
    /// The state directory.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) state_dir: StateSettings,
    /// `[limits]`.
    #[command(flatten)]
    pub(crate) limits: LimitsTable,
    /// `[heartbeat]`.
    #[command(flatten)]
    pub(crate) heartbeat: HeartbeatSettings,
    /// `[pages]`.
    #[command(flatten)]
    pub(crate) pages: PagesSettings,
    /// `[cluster]`, used with `redis`.
    #[command(flatten)]
    pub(crate) cluster: ClusterConfig,
    /// `[state]`.
    #[command(flatten)]
    pub(crate) state: StateConfig,
    /// `[actions.NAME]`, by name (in the file only: each is a table).
    #[arg(skip)]
    pub(crate) actions: BTreeMap<String, ActionConfig>,
    /// `[metrics]`.
    #[arg(skip)]
    pub(crate) metrics: MetricsSettings,
}

/// `[limits]`: one table in the file, each part's share declared by it.
#[derive(clap::Args, Serialize, Debug, Default, Clone)]
pub(crate) struct LimitsTable {
    /// Connections, names and outgoing queues.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) hub: HubSettings,
    /// What a page may send.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) page: PageLimits,
    /// The accept loop.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) server: ServerLimits,
    /// Runs at once.
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) actions: ActionLimits,
}

/// Gives every flag of `serve` that has none its environment variable,
/// `PAGEWIRE_` and the flag's name in capitals (`--limits-max-connections`:
/// `PAGEWIRE_LIMITS_MAX_CONNECTIONS`); a repeatable flag's variable holds
/// its values separated by commas (so does the flag).
pub(crate) fn with_env(serve: clap::Command) -> clap::Command {
    serve.mut_args(|arg| {
        let Some(long) = arg.get_long().map(str::to_owned) else {
            return arg;
        };
        let long = long.as_str();
        if arg.get_env().is_some() || matches!(long, "help" | "print-config") {
            return arg;
        }
        let name = format!("PAGEWIRE_{}", long.to_ascii_uppercase().replace('-', "_"));
        let arg = match arg.get_action() {
            clap::ArgAction::Append => arg.value_delimiter(','),
            _ => arg,
        };
        // The Redis URL may hold a password.
        let secret = long == "redis";
        arg.env(name).hide_env_values(secret)
    })
}

/// `matches` with what clap filled in from defaults taken out, so that
/// updating the file's settings with them changes only what was given on
/// the command line or in the environment.
pub(crate) fn given_only(matches: &clap::ArgMatches) -> clap::ArgMatches {
    let mut given = matches.clone();
    let defaulted: Vec<String> = matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::DefaultValue))
        .map(|id| id.as_str().to_owned())
        .collect();
    for id in defaulted {
        let _ = given.try_clear_id(&id);
    }
    given
}

impl ServeConfig {
    /// The file named by `--config` or `PAGEWIRE_CONFIG` (if any), the
    /// `PAGEWIRE_*` variables and then the flags in `matches` set over it,
    /// over the defaults. Paths in the file are relative to its directory.
    pub(crate) fn load(matches: &clap::ArgMatches) -> anyhow::Result<ServeConfig> {
        let path = matches.get_one::<PathBuf>("config");
        let mut config = match path {
            Some(path) => ServeConfig::read(path)?,
            None => ServeConfig::default(),
        };
        let in_file = (
            config.http.token.is_some(),
            config.http.token_file.is_some(),
        );
        config.update_from_arg_matches(&given_only(matches))?;
        let level = |id: &str, in_file: bool| match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Some(2),
            Some(ValueSource::EnvVariable) => Some(1),
            _ => in_file.then_some(0),
        };
        config
            .http
            .keep_the_highest_token(level("token", in_file.0), level("token_file", in_file.1));
        Ok(config)
    }

    /// The configuration file's `text`, each part read straight from it (see
    /// `app::file`: every error keeps its line).
    pub(crate) fn parse(text: &str) -> Result<ServeConfig, toml::de::Error> {
        ServeConfig::parse_all(text).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Like [`ServeConfig::parse`], with every part's first error (each at
    /// its line): an unknown key, then what each part could not read.
    pub(crate) fn parse_all(text: &str) -> Result<ServeConfig, Vec<toml::de::Error>> {
        let mut errors = Vec::new();
        // A document that is not TOML at all has one error to tell.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(vec![e]);
        }
        errors.extend(file::check_keys(text).err());
        fn part<T: Default>(
            errors: &mut Vec<toml::de::Error>,
            read: Result<T, toml::de::Error>,
        ) -> T {
            read.unwrap_or_else(|e| {
                errors.push(e);
                T::default()
            })
        }
        let tables: file::Tables = part(&mut errors, toml::from_str(text));
        let config = ServeConfig {
            http: part(&mut errors, toml::from_str(text)),
            config: None,
            print_config: false,
            control: part(&mut errors, toml::from_str(text)),
            redis: part(&mut errors, toml::from_str(text)),
            log: part(&mut errors, toml::from_str(text)),
            state_dir: part(&mut errors, toml::from_str(text)),
            limits: LimitsTable {
                hub: part(&mut errors, file::limits(text)),
                page: part(&mut errors, file::limits(text)),
                server: part(&mut errors, file::limits(text)),
                actions: part(&mut errors, file::limits(text)),
            },
            heartbeat: tables.heartbeat,
            pages: tables.pages,
            actions: tables.actions,
            cluster: tables.cluster,
            state: tables.state,
            metrics: tables.metrics,
        };
        match errors.is_empty() {
            true => Ok(config),
            false => Err(errors),
        }
    }

    /// The settings as a configuration file: every key with the value it
    /// has (defaults filled in), the token and a Redis password hidden.
    /// `--print-config` prints it; `check-config` reads it back.
    pub(crate) fn to_toml(&self) -> String {
        let mut shown = self.clone();
        let http = &mut shown.http;
        http.listen
            .get_or_insert_with(|| crate::doors::http::settings::DEFAULT_LISTEN.into());
        http.access.get_or_insert_with(Default::default);
        http.serve_dotfiles.get_or_insert(false);
        http.compression
            .get_or_insert(crate::doors::http::settings::DEFAULT_COMPRESSION);
        if http.token.is_some() {
            http.token = Some(HIDDEN.to_owned());
        }
        shown.control.path = Some(shown.control.path());
        shown.log.log_format.get_or_insert_with(Default::default);
        shown.redis.redis = shown
            .redis
            .redis
            .map(|url| crate::engine::backplane::redis::redact(&url));
        let text = toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot show: {e}\n"));
        let source = match &self.config {
            Some(path) => format!("the file {}", path.display()),
            None => "no file".to_owned(),
        };
        format!(
            "# pagewire's effective settings: flags, then PAGEWIRE_* variables, then {source}, \
             then the defaults.\n# Secrets are shown as {HIDDEN}.\n{text}"
        )
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
                &mut config.http.token_file,
                &mut config.control.path,
                &mut config.state_dir.state_dir,
            ] {
                *p = p.take().map(|p| relative_to(Some(base), p));
            }
        }
        Ok(config)
    }
}

/// What `--print-config` shows in place of a secret.
const HIDDEN: &str = "(hidden)";

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
    /// Whether permessage-deflate is negotiated with pages that offer it.
    pub(crate) compression: bool,
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
    /// The state directory, if there is one.
    pub(crate) state_dir: Option<PathBuf>,
    /// Names whose pages `/metrics` counts.
    pub(crate) metric_names: Vec<String>,
    /// Everything is served under this path (`""` for none).
    pub(crate) base_path: String,
    /// Proxies whose forwarding headers are believed.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// How the log is printed.
    pub(crate) log_format: LogFormat,
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
        let mut hub = limits.hub.limits();
        hub.resume_grace = config.state.grace()?;
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
            compression: http
                .compression
                .unwrap_or(crate::doors::http::settings::DEFAULT_COMPRESSION),
            token: http.token()?,
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
            state_dir: config.state_dir.dir(),
            metric_names,
            base_path: http.base_path()?,
            trusted_proxies: http.trusted_proxies.clone(),
            log_format: config.log.log_format.unwrap_or_default(),
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

/// `pagewire check-config FILE`: reads the file as `serve --config FILE`
/// would, and checks every setting as `serve` does before it starts
/// (the TLS files are loaded too). Each error is one line, `FILE:LINE:
/// WHAT` (`FILE: WHAT` when it concerns no one line).
pub(crate) fn check_file(path: &Path) -> Result<(), Vec<String>> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: cannot read it: {e}")])?;
    let at_line = |line: Option<usize>, what: &str| match line {
        Some(line) => format!("{shown}:{line}: {what}"),
        None => format!("{shown}: {what}"),
    };
    let config = ServeConfig::parse_all(&text).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                let line = e.span().map(|span| line_at(&text, span.start));
                at_line(line, e.message().trim_end())
            })
            .collect::<Vec<_>>()
    })?;
    let mut config = config;
    config.config = Some(path.to_path_buf());
    let base = path.parent();
    for p in [
        &mut config.http.root,
        &mut config.http.tls_cert,
        &mut config.http.tls_key,
        &mut config.http.token_file,
        &mut config.control.path,
    ] {
        *p = p.take().map(|p| relative_to(base, p));
    }
    let check = || -> anyhow::Result<()> {
        let settings = Settings::resolve(config)?;
        settings.listen_addr()?;
        if let Some((cert, key)) = &settings.tls {
            crate::doors::http::server::tls_acceptor(cert, key)?;
        }
        Ok(())
    };
    check().map_err(|e| {
        let what = format!("{e:#}");
        vec![at_line(line_of_key(&text, &what), &what)]
    })
}

/// The line (from 1) of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// The line of the key or table of `text` that `message` names, if any:
/// the first `table.key` it names, else the first key alone, else the
/// first table.
fn line_of_key(text: &str, message: &str) -> Option<usize> {
    let names = |word: &str| {
        !word.is_empty()
            && message.match_indices(word).any(|(at, _)| {
                let before = message[..at].chars().next_back();
                let after = message[at + word.len()..].chars().next();
                let boundary =
                    |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                boundary(before) && boundary(after)
            })
    };
    // Best match so far: (how good, line); a better one replaces it.
    let mut best: Option<(u8, usize)> = None;
    let mut consider = |rank: u8, line: usize| {
        if best.map_or(true, |(r, _)| rank > r) {
            best = Some((rank, line));
        }
    };
    let mut table = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim_matches(['[', ' ']).to_owned();
            if names(&table) {
                consider(1, number + 1);
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        if key.starts_with('#') {
            continue;
        }
        if !table.is_empty() && names(&format!("{table}.{key}")) {
            consider(3, number + 1);
        } else if names(key) {
            consider(2, number + 1);
        }
    }
    best.map(|(_, line)| line)
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
