//! The command line: flags, subcommands, and the exit code of each outcome.
//!
//! `pagewire serve` runs the daemon. `pagewire ws|set|run|help ...` rebuild
//! a command line from their arguments and send it over the control socket;
//! `pagewire monitor` tails the Monitor and `pagewire console` attaches a
//! line editor to the running daemon. Exit codes are chosen in one place,
//! [`Exit`]: 0 success, 1 the daemon refused or failed the command, 2
//! the CLI could not run it (bad flags, no daemon answering). `serve` exits
//! 1 when the daemon cannot start; `monitor` and `console` exit 0 when the
//! stream or the input ends and 2 when the daemon cannot be reached or goes
//! away mid-session. A successful command's output goes to stdout, an error
//! to stderr; a closed stdout (`pagewire ws | head -1`) is not an error.
//! Everything printed is escaped ([`crate::base::text`]), whatever the control
//! socket sent: no reply or Monitor line acts on the terminal.

use std::ffi::OsString;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::app::config::ServeConfig;
use crate::base::door::Status;
use crate::base::logline::{self, Level, LogFormat};
use crate::base::stdout::ConsoleOut;
use crate::doors::console::{Editor, EditorConfig};
use crate::doors::control::{self, Client, ClientError};

/// Serve web pages and keep a live, addressable WebSocket to each of them.
#[derive(Debug, Parser)]
#[command(name = "pagewire", version, about, disable_help_subcommand = true)]
pub(crate) struct Cli {
    /// The daemon's control socket [default: $XDG_RUNTIME_DIR/pagewire.sock,
    /// else /run/pagewire/pagewire.sock for root, /tmp/pagewire-UID/pagewire.sock
    /// for other users; without a socket there, the service's
    /// /run/pagewire/pagewire.sock for members of the group pagewire].
    #[arg(long, value_name = "PATH", env = "PAGEWIRE_CONTROL", global = true)]
    pub(crate) control: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CliCommand {
    /// Run the daemon: serve pages, WebSockets and the control socket.
    Serve(Box<ServeConfig>),
    /// List, write to, exec on or close WebSocket connections (`pagewire help ws`).
    #[command(after_help = crate::base::command::group_overview("ws"))]
    Ws(CommandWords),
    /// Change a daemon setting, e.g. `set notify status`.
    #[command(after_help = crate::base::command::group_overview("set"))]
    Set(CommandWords),
    /// Run a configured action by name.
    Run(CommandWords),
    /// Show the daemon's help on its commands.
    Help(CommandWords),
    /// Print the daemon's Monitor (its event log) live until interrupted.
    Monitor(MonitorArgs),
    /// Type commands to the running daemon in a line editor.
    Console(ConsoleArgs),
    /// Check a configuration file: print each error with its line, exit 1
    /// if there is any.
    CheckConfig(CheckConfigArgs),
    /// Print completions for a shell, e.g. `source <(pagewire completions
    /// bash)`.
    Completions(CompletionsArgs),
}

/// Arguments of `pagewire check-config`.
#[derive(Debug, Args)]
pub(crate) struct CheckConfigArgs {
    /// The configuration file (TOML).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

/// Arguments of `pagewire completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// The whole command line as clap sees it: the derived definitions, with
/// every `serve` flag's environment variable added
/// ([`crate::app::config::with_env`]). `--help`, the completions and the
/// man page all come from here.
pub(crate) fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", crate::app::config::with_env)
}

/// The words of a command line for the daemon, passed on as they are.
#[derive(Debug, Args)]
pub(crate) struct CommandWords {
    /// The rest of the command line (e.g. `write status "VPN up"`).
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) words: Vec<String>,
}

/// Flags of `pagewire monitor`.
#[derive(Debug, Args)]
pub(crate) struct MonitorArgs {
    /// Every node of the daemon's cluster, each line with its node
    #[arg(long)]
    pub(crate) cluster: bool,
}

/// Flags of `pagewire console`.
#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    /// Also print the Monitor's lines between the replies.
    #[arg(long)]
    pub(crate) monitor: bool,
}

/// How a CLI invocation ended; the one place exit codes are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The command succeeded: exit 0.
    Success,
    /// The daemon refused or failed the command (or `serve` failed): exit 1.
    Refused,
    /// The CLI could not run it (bad flags, no daemon answering): exit 2.
    CannotRun,
}

impl From<Exit> for ExitCode {
    fn from(outcome: Exit) -> ExitCode {
        ExitCode::from(match outcome {
            Exit::Success => 0,
            Exit::Refused => 1,
            Exit::CannotRun => 2,
        })
    }
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> ExitCode {
    main_with(std::env::args_os()).into()
}

/// [`main`] with explicit arguments (the first is the program name).
pub(crate) fn main_with(args: impl IntoIterator<Item = OsString>) -> Exit {
    let parsed = command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // --help and --version end here too, successfully.
            let _ = e.print();
            return if e.use_stderr() {
                Exit::CannotRun
            } else {
                Exit::Success
            };
        }
    };
    let control = cli.control;
    match (cli.command, matches.subcommand()) {
        // The configuration file under the flags (`--control` given before
        // `serve` is among them: clap passes global flags down).
        (CliCommand::Serve(_), Some((_, flags))) => match ServeConfig::load(flags) {
            Ok(config) if config.print_config => print_config(&config),
            Ok(config) => serve(config),
            Err(e) => fail(format_args!("{e:#}"), Exit::Refused),
        },
        (CliCommand::CheckConfig(args), _) => check_config(&args.file),
        (CliCommand::Completions(args), _) => {
            clap_complete::generate(args.shell, &mut command(), "pagewire", &mut io::stdout());
            Exit::Success
        }
        (command, _) => client_command(command, control),
    }
}

/// Runs a subcommand that talks to the daemon (every one but `serve`).
fn client_command(command: CliCommand, control: Option<PathBuf>) -> Exit {
    match command {
        // Not reached: `serve` always comes with its flags.
        CliCommand::Serve(_) => Exit::CannotRun,
        CliCommand::Ws(words) => one_command("ws", words, control),
        CliCommand::Set(words) => one_command("set", words, control),
        CliCommand::Run(words) => one_command("run", words, control),
        CliCommand::Help(words) => one_command("help", words, control),
        CliCommand::Monitor(args) => client_runtime(monitor(control_path(control), args.cluster)),
        CliCommand::Console(args) => client_runtime(console(control_path(control), args)),
        // Not reached: answered without the daemon in `main_with`.
        CliCommand::CheckConfig(_) | CliCommand::Completions(_) => Exit::CannotRun,
    }
}

/// `serve --print-config`: the settings `serve` would run with, checked,
/// as a configuration file.
fn print_config(config: &ServeConfig) -> Exit {
    match crate::app::config::Settings::resolve(config.clone()) {
        Ok(_) => print_stdout(&config.to_toml()),
        Err(e) => fail(format_args!("{e:#}"), Exit::Refused),
    }
}

/// `check-config FILE`: `FILE: ok`, or each error as `FILE:LINE: WHAT`.
fn check_config(path: &std::path::Path) -> Exit {
    match crate::app::config::check_file(path) {
        Ok(()) => print_stdout(&format!("{}: ok", path.display())),
        Err(errors) => {
            for error in errors {
                print_stderr(&error);
            }
            Exit::Refused
        }
    }
}

fn control_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(control::client_default_path)
}

fn serve(config: ServeConfig) -> Exit {
    init_tracing();
    let format = config.log.log_format.unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the runtime: {e}"), Exit::Refused),
    };
    match runtime.block_on(crate::app::serve::run(config)) {
        Ok(()) => Exit::Success,
        Err(e) if format == LogFormat::Json => {
            let message = format!("error: {e:#}");
            let node = crate::base::logline::Node::default();
            let line = logline::line(
                format,
                Level::Error,
                "exit",
                &node.get(),
                &message,
                Default::default(),
            );
            print_stderr(&line);
            Exit::Refused
        }
        Err(e) => fail(format_args!("{e:#}"), Exit::Refused),
    }
}

/// Logs internal diagnostics to stderr, filtered by `RUST_LOG` (default:
/// warnings). The Monitor, not this, is the operator's event stream.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Runs a short-lived client future on a single-threaded runtime.
fn client_runtime(work: impl std::future::Future<Output = Exit>) -> Exit {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => fail(
            format_args!("cannot start the runtime: {e}"),
            Exit::CannotRun,
        ),
    }
}

fn one_command(name: &str, words: CommandWords, control: Option<PathBuf>) -> Exit {
    let mut tokens = Vec::with_capacity(words.words.len() + 1);
    tokens.push(name.to_owned());
    tokens.extend(words.words);
    let line = crate::base::command::quote(&tokens);
    let path = control_path(control);
    client_runtime(async move {
        match control::run_command(&path, &line).await {
            Ok(reply) if reply.is_ok() => {
                if reply.output.is_empty() {
                    Exit::Success
                } else {
                    print_stdout(&reply.output)
                }
            }
            // A result all the same (`ws call` with a page that threw):
            // on stdout, for the script to read, and a failure.
            Ok(reply) if reply.status == Status::Partial => match print_stdout(&reply.output) {
                Exit::Success => Exit::Refused,
                other => other,
            },
            Ok(reply) => {
                print_stderr(&reply.output);
                Exit::Refused
            }
            Err(e) => client_failed(&e),
        }
    })
}

async fn monitor(path: PathBuf, cluster: bool) -> Exit {
    // One Monitor line is one line, whatever the socket sent.
    let result = control::watch(&path, cluster, |line| {
        match print_line(&crate::base::text::escape(line)) {
            Ok(()) => ControlFlow::Continue(()),
            // `pagewire monitor | head`: the reader is gone, so are we.
            Err(_) => ControlFlow::Break(()),
        }
    })
    .await;
    match result {
        Ok(()) => Exit::Success,
        Err(e) => client_failed(&e),
    }
}

async fn console(path: PathBuf, args: ConsoleArgs) -> Exit {
    let mut client = match Client::connect(&path).await {
        Ok(client) => client,
        Err(e) => return client_failed(&e),
    };
    let out = ConsoleOut::stdout();
    let watcher = args.monitor.then(|| {
        let out = out.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let result = control::watch(&path, false, |line| {
                // One Monitor line is one line, whatever the socket sent.
                out.print(crate::base::text::escape(line));
                ControlFlow::Continue(())
            })
            .await;
            match result {
                Ok(()) => out.print("(monitor: the daemon ended the stream)"),
                Err(e) => out.print(format!("monitor: {e}")),
            }
        })
    });
    let mut editor = Editor::spawn(EditorConfig::default(), out.clone());
    let mut failure = None;
    while let Some(request) = editor.next().await {
        match client.run(&request.line).await {
            Ok(reply) => request.answer(reply),
            Err(e) => {
                // Dropping the request ends the editor before its next prompt.
                failure = Some(e);
                break;
            }
        }
    }
    let _ = editor.end().await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    out.flush(Duration::from_secs(2)).await;
    match failure {
        None => Exit::Success,
        Some(e) => client_failed(&e),
    }
}

fn client_failed(e: &ClientError) -> Exit {
    fail(e, Exit::CannotRun)
}

fn fail(message: impl std::fmt::Display, outcome: Exit) -> Exit {
    print_stderr(&format!("error: {message}"));
    outcome
}

/// Prints a successful command's output; a closed stdout (`| head -1`) is
/// not a failure of the command.
fn print_stdout(text: &str) -> Exit {
    match print_line(text) {
        Ok(()) => Exit::Success,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => fail(
            format_args!("cannot write the output: {e}"),
            Exit::CannotRun,
        ),
    }
}

/// Prints `text` with control characters escaped: the daemon escapes what
/// it sends, but whatever answers on the control socket may not be the
/// daemon, or not this version of it. Line breaks stay (a `ws` listing is
/// several lines).
fn print_line(text: &str) -> io::Result<()> {
    let text = crate::base::text::escape_lines(text);
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Prints `text` on stderr, escaped as by [`print_line`].
fn print_stderr(text: &str) {
    let text = crate::base::text::escape_lines(text);
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = err.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pagewire").chain(args.iter().copied()))
    }

    #[test]
    fn command_words_pass_through() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["ws"], &[]),
            (&["ws", "write", "status", "-5"], &["write", "status", "-5"]),
            (
                &["ws", "write", "status", "--not-a-flag"],
                &["write", "status", "--not-a-flag"],
            ),
            (&["ws", "-5"], &["-5"]),
            (&["help", "ws"], &["ws"]),
        ];
        for (args, want) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let words = match cli.command {
                CliCommand::Ws(w) | CliCommand::Help(w) => w.words,
                other => panic!("{args:?}: unexpected {other:?}"),
            };
            assert_eq!(&words, want, "{args:?}");
        }
    }

    #[test]
    fn control_is_accepted_before_and_after_the_subcommand() {
        let cases: &[&[&str]] = &[
            &["--control", "/x/a.sock", "ws"],
            &["ws", "--control", "/x/a.sock"],
            &["--control", "/x/a.sock", "monitor"],
            &["monitor", "--control", "/x/a.sock"],
            &["console", "--control", "/x/a.sock", "--monitor"],
        ];
        for args in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(
                cli.control.as_deref(),
                Some(Path::new("/x/a.sock")),
                "{args:?}"
            );
        }
        for args in [
            &["--control", "/x/a.sock", "serve"][..],
            &["serve", "--control", "/x/a.sock"][..],
        ] {
            let argv = std::iter::once("pagewire").chain(args.iter().copied());
            let matches = Cli::command().try_get_matches_from(argv).expect("parses");
            let (_, flags) = matches.subcommand().expect("serve");
            let serve = ServeConfig::load(flags).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let path = serve.control.path;
            assert_eq!(path.as_deref(), Some(Path::new("/x/a.sock")), "{args:?}");
        }
    }

    #[test]
    fn serve_flags_parse() {
        let cli = parse(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            "site",
            "--access",
            "acl",
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "fd00::/8",
            "--origin",
            "https://a.example",
            "--token",
            "s3cret",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let CliCommand::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let http = &args.http;
        assert_eq!(http.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(
            http.access,
            Some(crate::doors::http::access::AccessMode::Acl)
        );
        assert_eq!(http.allow.len(), 2);
        assert_eq!(http.origins, ["https://a.example"]);
        assert_eq!(http.token.as_deref(), Some("s3cret"));
        assert_eq!(args.redis.redis, None);
    }

    #[test]
    fn bad_flags_are_refused() {
        let cases: &[&[&str]] = &[
            &[],
            &["--bogus"],
            &["serve", "--access", "everyone"],
            &["serve", "--allow", "not-a-cidr"],
            &["serve", "--listen", "nowhere"],
            &["serve", "--tls-cert", "cert.pem"],
            &["monitor", "extra"],
        ];
        for args in cases {
            match parse(args) {
                Err(e) => assert!(e.use_stderr(), "{args:?}"),
                Ok(cli) => panic!("{args:?} accepted: {cli:?}"),
            }
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitCode::from(Exit::Success), ExitCode::from(0));
        assert_eq!(ExitCode::from(Exit::Refused), ExitCode::from(1));
        assert_eq!(ExitCode::from(Exit::CannotRun), ExitCode::from(2));
        let args = ["pagewire", "--definitely-not-a-flag"].map(OsString::from);
        assert_eq!(main_with(args), Exit::CannotRun);
    }
}
