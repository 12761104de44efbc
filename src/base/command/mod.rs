//! The command language: a line of text in, a [`Command`] or a [`ParseError`] out.
//!
//! Parsing knows quoting and syntax only; whether index 7 exists or whether a
//! door may run a command is decided by `exec`. Nothing here does I/O.

use std::fmt;
use std::time::Duration;

mod defs;
mod lex;
mod options;

pub(crate) use defs::{group_overview, help_text};
pub use defs::{CommandDef, COMMANDS};
pub use lex::{quote, tokenize};
pub use options::{parse_duration, OptionDef, Options, DEFAULT_TIMEOUT, MAX_TIMEOUT};

/// The longest command line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The longest name (`ws register`, a TARGET, `set notify`, an action), in
/// characters (ASCII, so bytes too).
pub(crate) const MAX_NAME_LEN: usize = 64;

/// What a name may hold, as every refusal of one says it (spec section 1).
pub(crate) const NAME_RULE: &str =
    "a name is 1 to 64 characters of ASCII letters, digits and -_.: \
                             and does not start with a digit";

/// The connections a command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One connection, by the index `ws` lists (never 0).
    Index(u64),
    /// Every connection that registered this name.
    Name(String),
    /// Every connection (`*`).
    All,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Index(index) => write!(f, "{index}"),
            Target::Name(name) => f.write_str(name),
            Target::All => f.write_str("*"),
        }
    }
}

/// `--retain [--ttl DURATION]` on `ws write` and `ws exec`: keep the value
/// as the name's current one, for pages that register it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retain {
    /// How long it is kept; `None` until `ws forget` or a newer value.
    pub ttl: Option<Duration>,
}

/// The longest `--ttl` accepted.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a page reports of itself with `ws visibility`: the browser's Page
/// Visibility and lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Shown on a screen (`document.visibilityState` is `visible`).
    Visible,
    /// In a background tab, a minimised window, a locked screen.
    Hidden,
    /// Frozen by the browser (the `freeze` event): its timers do not run.
    Frozen,
}

impl Visibility {
    /// Every state, in the order of [`Visibility::code`] (from 1).
    pub(crate) const ALL: [Visibility; 3] =
        [Visibility::Visible, Visibility::Hidden, Visibility::Frozen];

    /// The word pages send and `ws` shows.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Visibility::Visible => "visible",
            Visibility::Hidden => "hidden",
            Visibility::Frozen => "frozen",
        }
    }

    /// A small number for an atomic (0 stands for "not reported").
    pub(crate) fn code(self) -> u8 {
        match self {
            Visibility::Visible => 1,
            Visibility::Hidden => 2,
            Visibility::Frozen => 3,
        }
    }

    /// The state of a [`Visibility::code`]; `None` for 0 or anything else.
    pub(crate) fn from_code(code: u8) -> Option<Visibility> {
        Visibility::ALL.into_iter().find(|v| v.code() == code)
    }

    /// The state a [`Visibility::word`] names.
    pub(crate) fn from_word(word: &str) -> Option<Visibility> {
        Visibility::ALL.into_iter().find(|v| v.word() == word)
    }
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ws`: list current connections.
    List,
    /// `ws register NAME`: the sending page's element NAME takes writes for NAME.
    Register {
        /// The element name, valid per [`valid_name`].
        name: String,
    },
    /// `ws write TARGET TEXT`: show text in the target pages' elements.
    Write {
        /// Who receives the text.
        target: Target,
        /// The text, shown as text (possibly empty, which clears the element).
        text: String,
        /// `--retain`: also kept as the name's current text.
        retain: Option<Retain>,
    },
    /// `ws exec TARGET FUNC [ARG]`: call `FUNC(ARG)` on the target pages.
    Exec {
        /// Who receives the call.
        target: Target,
        /// The function's name (never empty).
        func: String,
        /// Its argument; empty when left out.
        arg: String,
        /// `--retain`: also kept as the name's last call of `func`.
        retain: Option<Retain>,
    },
    /// `ws retained`: list the retained values.
    Retained,
    /// `ws forget NAME`: drop what is retained for NAME.
    Forget {
        /// The name.
        name: String,
    },
    /// `ws visibility STATE`: (from a page) what the browser shows of it.
    Visibility {
        /// The state reported.
        state: Visibility,
    },
    /// `ws close [TARGET]`: close connections.
    Close {
        /// Who is closed; [`Target::All`] when left out.
        target: Target,
    },
    /// `set notify NAME|off`: send Monitor lines to every page's element NAME.
    Notify {
        /// The element name, or `None` for `off`.
        name: Option<String>,
    },
    /// `run [--to TARGET] ACTION [ARG...]`: start a configured action.
    Run {
        /// The action's name in the configuration (never empty, never
        /// starting with `-`).
        action: String,
        /// The remaining tokens, as given.
        args: Vec<String>,
        /// Where the output goes (`--to TARGET`); `None` leaves it to the
        /// door: the page that ran it, or the Monitor.
        to: Option<Target>,
    },
    /// `help [COMMAND]`: usage text.
    Help {
        /// The full name of the command asked about (`write` becomes
        /// `ws write`), or `None` for the list of all commands.
        topic: Option<String>,
    },
    /// `ws call TARGET FUNC [ARG]`: call `FUNC(ARG)` on the target pages
    /// and wait for each one's result.
    Call {
        /// Who is called.
        target: Target,
        /// The function's name (never empty).
        func: String,
        /// Its argument; empty when left out.
        arg: String,
        /// How long to wait for the results (`--timeout`).
        timeout: Duration,
    },
    /// `ws read TARGET [NAME]`: the text each target page's element shows.
    Read {
        /// Whose element is read.
        target: Target,
        /// The element; `None` reads the one the target names, or the
        /// page's first registered element.
        name: Option<String>,
        /// How long to wait for the answers (`--timeout`).
        timeout: Duration,
    },
    /// `ws wait NAME [--count N] [--timeout D]`: block until at least
    /// `count` pages have registered NAME.
    Wait {
        /// The name waited for.
        name: String,
        /// How many pages must hold it (at least 1).
        count: usize,
        /// How long to wait.
        timeout: Duration,
    },
    /// `ws who TARGET`: the connections TARGET reaches; nothing is sent.
    Who {
        /// The target to show.
        target: Target,
    },
    /// `--dry-run` on a command that takes a TARGET: show whom it would
    /// reach (as `ws who`) and do nothing.
    DryRun(Box<Command>),
    /// `--wait` on `ws write` or `ws exec`: send it, then wait until every
    /// target page confirmed it applied it.
    Confirm {
        /// The write or exec.
        cmd: Box<Command>,
        /// How long to wait for the confirmations (`--timeout`).
        timeout: Duration,
    },
}

impl Command {
    /// The command's entry in the table of commands.
    pub(crate) fn def(&self) -> &'static CommandDef {
        match self {
            Command::List => &defs::WS,
            Command::Register { .. } => &defs::WS_REGISTER,
            Command::Write { .. } => &defs::WS_WRITE,
            Command::Exec { .. } => &defs::WS_EXEC,
            Command::Close { .. } => &defs::WS_CLOSE,
            Command::Retained => &defs::WS_RETAINED,
            Command::Forget { .. } => &defs::WS_FORGET,
            Command::Visibility { .. } => &defs::WS_VISIBILITY,
            Command::Notify { .. } => &defs::SET_NOTIFY,
            Command::Run { .. } => &defs::RUN,
            Command::Help { .. } => &defs::HELP,
            Command::Call { .. } => &defs::WS_CALL,
            Command::Read { .. } => &defs::WS_READ,
            Command::Wait { .. } => &defs::WS_WAIT,
            Command::Who { .. } => &defs::WS_WHO,
            // An option does not make another command: rights and help
            // follow the command it modifies.
            Command::DryRun(cmd) | Command::Confirm { cmd, .. } => cmd.def(),
        }
    }

    /// The connections the command addresses, for the commands that take
    /// a TARGET (`run` only with `--to`).
    pub(crate) fn target(&self) -> Option<&Target> {
        match self {
            Command::Write { target, .. }
            | Command::Exec { target, .. }
            | Command::Close { target }
            | Command::Call { target, .. }
            | Command::Read { target, .. }
            | Command::Who { target } => Some(target),
            Command::Run { to, .. } => to.as_ref(),
            Command::DryRun(cmd) | Command::Confirm { cmd, .. } => cmd.target(),
            Command::List
            | Command::Register { .. }
            | Command::Notify { .. }
            | Command::Help { .. }
            | Command::Retained
            | Command::Forget { .. }
            | Command::Visibility { .. }
            | Command::Wait { .. } => None,
        }
    }

    /// The command's name for logs and metrics, e.g. `ws write`.
    pub(crate) fn name(&self) -> &'static str {
        self.def().name
    }

    /// The commands whose rights running this one takes: its own, and for
    /// a dry run `ws who`'s as well, since it lists what `ws who` lists.
    pub(crate) fn rights(&self) -> impl Iterator<Item = &'static str> {
        let listing = matches!(self, Command::DryRun(_)).then_some(defs::WS_WHO.name);
        std::iter::once(self.name()).chain(listing)
    }

    /// Whether the command only reads: it changes nothing on any page, in
    /// the daemon or outside it. A request that cannot show where it comes
    /// from may run only these. A new command is not read-only until it is
    /// listed here.
    pub(crate) fn is_read_only(&self) -> bool {
        match self {
            // `ws read` sends a frame, but the page only reads its own
            // element: nothing changes anywhere.
            Command::List
            | Command::Help { .. }
            | Command::Read { .. }
            | Command::Wait { .. }
            | Command::Who { .. }
            | Command::Retained
            | Command::DryRun(_) => true,
            Command::Register { .. }
            | Command::Forget { .. }
            | Command::Visibility { .. }
            | Command::Write { .. }
            | Command::Exec { .. }
            | Command::Close { .. }
            | Command::Notify { .. }
            | Command::Run { .. }
            | Command::Call { .. }
            | Command::Confirm { .. } => false,
        }
    }
}

/// Why a name is not valid; see [`valid_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// Nothing at all.
    #[error("it is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("it is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A digit first: `7abc` would start like an index.
    #[error("it starts with a digit")]
    LeadingDigit,
    /// A character outside the rule (a blank, `*`, `/`, a non-ASCII letter...).
    #[error("'{}' is not allowed", crate::base::text::Escaped(.0.encode_utf8(&mut [0; 4])))]
    Char(char),
}

/// A command line that cannot be parsed. The `Display` text is the one-line
/// error every door shows: what is wrong, then what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but blanks.
    #[error("empty command line; try 'help'")]
    Empty,
    /// More than [`MAX_LINE_BYTES`].
    #[error("line is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// NUL, CR or LF somewhere in the line.
    #[error("line contains {}; a command line is one line of text", char_name(*.ch))]
    ForbiddenChar {
        /// The offending character.
        ch: char,
    },
    /// A quoted token with no closing quote.
    #[error("unterminated double quote")]
    UnterminatedQuote,
    /// Something other than a blank right after a closing quote.
    #[error(
        "unexpected '{}' after a closing double quote; expected a blank or the end of the line",
        shown(.found)
    )]
    TextAfterQuote {
        /// The text up to the next blank.
        found: String,
    },
    /// A double quote that does not start a token.
    #[error(
        "double quote inside '{}'; a double quote may only start a token \
         (inside a quoted token write \\\")",
        shown(.token)
    )]
    QuoteInsideToken {
        /// The unquoted token holding it.
        token: String,
    },
    /// A first word that is no command.
    #[error("unknown command '{}'; {}try 'help'", shown(.name), DidYouMean(defs::closest(.name, &defs::command_words())))]
    UnknownCommand {
        /// The first word of the line.
        name: String,
    },
    /// A second word that is no subcommand of the first.
    #[error("{command}: unknown subcommand '{}'; {}expected {expected}", shown(.sub), DidYouMean(defs::closest(.sub, &defs::subcommand_words(command))))]
    UnknownSubcommand {
        /// The command, e.g. `ws`.
        command: &'static str,
        /// The word given.
        sub: String,
        /// The subcommands it has, e.g. `register, write, exec or close`.
        expected: String,
    },
    /// A command that needs a subcommand got none.
    #[error("{command}: missing subcommand; expected {expected}")]
    MissingSubcommand {
        /// The command, e.g. `set`.
        command: &'static str,
        /// The subcommands it has.
        expected: String,
    },
    /// A required argument is absent.
    #[error("{command}: missing {what}; usage: {usage}")]
    MissingArgument {
        /// The command, e.g. `ws write`.
        command: &'static str,
        /// The argument's placeholder in the usage, e.g. `TEXT`.
        what: &'static str,
        /// The command's usage.
        usage: &'static str,
    },
    /// An argument that may not be empty is `""`.
    #[error("{command}: {what} must not be empty; usage: {usage}")]
    EmptyArgument {
        /// The command.
        command: &'static str,
        /// The argument's placeholder in the usage.
        what: &'static str,
        /// The command's usage.
        usage: &'static str,
    },
    /// More arguments than the command takes.
    #[error("{command}: unexpected extra argument '{}'; usage: {usage}{}", shown(.arg), Hint(*.hint))]
    ExtraArgument {
        /// The command.
        command: &'static str,
        /// The first argument too many.
        arg: String,
        /// The command's usage.
        usage: &'static str,
        /// A reminder shown after the usage, e.g. to quote text.
        hint: Option<&'static str>,
    },
    /// A word starting with `-` where the command takes no such option.
    #[error("{command}: unknown option '{}'; usage: {usage}", shown(.option))]
    UnknownOption {
        /// The command.
        command: &'static str,
        /// The word given.
        option: String,
        /// The command's usage.
        usage: &'static str,
    },
    /// An option used wrongly: `--ttl` without `--retain`, `--retain` for
    /// an index or `*`.
    #[error("{command}: {why}; usage: {usage}")]
    BadOption {
        /// The command.
        command: &'static str,
        /// What is wrong.
        why: &'static str,
        /// The command's usage.
        usage: &'static str,
    },
    /// A DURATION that does not read as one.
    #[error(
        "invalid duration '{}'; expected a whole number and s, m, h or d (90s, 20m, 2h), \
         at most 366d",
        shown(.given)
    )]
    BadDuration {
        /// The word given.
        given: String,
    },
    /// A visibility state that is none of the known ones.
    #[error("ws visibility: unknown state '{}'; expected visible, hidden or frozen", shown(.given))]
    BadVisibility {
        /// The word given.
        given: String,
    },
    /// An option with a value it cannot take, or used where it means
    /// nothing (`--timeout` on `ws write` without `--wait`).
    #[error("{command}: {option}: {problem}; usage: {usage}")]
    InvalidOption {
        /// The command.
        command: &'static str,
        /// The option, e.g. `--timeout`.
        option: &'static str,
        /// What is wrong, e.g. `'5x' is not a duration; ...`.
        problem: String,
        /// The command's usage.
        usage: &'static str,
    },
    /// A TARGET of only zeros.
    #[error("index must be a positive integer, not 0")]
    IndexZero,
    /// A TARGET of digits beyond `u64::MAX`.
    #[error("index {} is too large; the largest index is {}", shown(.index), u64::MAX)]
    IndexTooLarge {
        /// The digits given.
        index: String,
    },
    /// A name that [`valid_name`] refuses.
    #[error("invalid name '{}': {problem}; {NAME_RULE}", shown(.name))]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// `help` about something that is no command.
    #[error("help: unknown topic '{}'; known topics: {known}", shown(.topic))]
    UnknownTopic {
        /// The topic given.
        topic: String,
        /// Every command name.
        known: String,
    },
}

/// How a forbidden character is named in an error.
fn char_name(ch: char) -> String {
    match ch {
        '\0' => "a NUL character".to_string(),
        '\n' => "a newline".to_string(),
        '\r' => "a carriage return".to_string(),
        other => format!("the character {other:?}"),
    }
}

/// Shows user input inside an error: enough to recognise a token; a
/// 64 KiB token must not make a 64 KiB error line.
fn shown(text: &str) -> crate::base::text::Shown<'_> {
    crate::base::text::shown(text, 40)
}

/// "did you mean 'write'? " for a mistyped word, or nothing.
struct DidYouMean(Option<&'static str>);

impl fmt::Display for DidYouMean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(word) => write!(f, "did you mean '{word}'? "),
            None => Ok(()),
        }
    }
}

/// Shows an optional hint after a usage, with a separating space.
struct Hint(Option<&'static str>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hint) => write!(f, " {hint}"),
            None => Ok(()),
        }
    }
}

/// Checks a name given to `ws register`, as a TARGET, to `set notify` or
/// to a configured action, against [`NAME_RULE`]: 1 to [`MAX_NAME_LEN`]
/// ASCII letters, digits and `-_.:`, not starting with a digit (so that it
/// can never read as an index; `*` is refused as well). ASCII only, on
/// purpose: a name is an element id in a page and a word in listings and
/// Monitor lines, where look-alike letters from other scripts, bidi
/// overrides or invisible characters would let two different names look
/// the same.
pub(crate) fn valid_name(s: &str) -> Result<(), ParseError> {
    let problem = if s.is_empty() {
        NameProblem::Empty
    } else if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        NameProblem::Char(c)
    } else if s.len() > MAX_NAME_LEN {
        NameProblem::TooLong
    } else if s.starts_with(|c: char| c.is_ascii_digit()) {
        NameProblem::LeadingDigit
    } else {
        return Ok(());
    };
    Err(ParseError::InvalidName {
        name: s.to_string(),
        problem,
    })
}

/// Parses one command line.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let mut words = tokenize(line)?.into_iter();
    let Some(first) = words.next() else {
        return Err(ParseError::Empty);
    };
    match first.as_str() {
        "ws" => parse_ws(words),
        "set" => parse_set(words),
        "run" => {
            let mut args = Args::new(&defs::RUN, words);
            let mut action = args.non_empty("ACTION")?;
            let mut to = None;
            // Options come before ACTION only, each once: everything after
            // it belongs to the action, so `run build --to 3` passes `--to
            // 3` on.
            loop {
                if action == "--to" && to.is_none() {
                    to = Some(args.target()?);
                } else if action == options::DRY_RUN.name && !args.options.dry_run {
                    args.options.dry_run = true;
                } else {
                    break;
                }
                action = args.non_empty("ACTION")?;
            }
            if action.starts_with('-') {
                return Err(ParseError::UnknownOption {
                    command: defs::RUN.name,
                    option: action,
                    usage: defs::RUN.usage,
                });
            }
            if args.options.dry_run && to.is_none() {
                return Err(args.invalid(&options::DRY_RUN, "only with --to TARGET".into()));
            }
            let rest = args.words.by_ref().collect();
            args.wrap(Command::Run {
                action,
                args: rest,
                to,
            })
        }
        "help" => {
            let words: Vec<String> = words.collect();
            if words.is_empty() {
                return Ok(Command::Help { topic: None });
            }
            let topic = words.join(" ");
            match defs::find(&topic) {
                Some(def) => Ok(Command::Help {
                    topic: Some(def.name.to_string()),
                }),
                None => Err(ParseError::UnknownTopic {
                    topic,
                    known: defs::known_topics(),
                }),
            }
        }
        _ => Err(ParseError::UnknownCommand { name: first }),
    }
}

/// Parses what follows `ws`.
fn parse_ws(mut words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let Some(sub) = words.next() else {
        return Ok(Command::List);
    };
    let command = match sub.as_str() {
        // As `help ws`: the question a new user asks first.
        "help" => {
            Args::new(&defs::HELP, words).finish()?;
            Command::Help {
                topic: Some("ws".to_string()),
            }
        }
        "register" => {
            let mut args = Args::new(&defs::WS_REGISTER, words);
            let name = args.name("NAME")?;
            args.finish()?;
            Command::Register { name }
        }
        "write" => parse_ws_write(words)?,
        "exec" => parse_ws_exec(words)?,
        "retained" => {
            Args::new(&defs::WS_RETAINED, words).finish()?;
            Command::Retained
        }
        "forget" => {
            let mut args = Args::new(&defs::WS_FORGET, words);
            let name = args.name("NAME")?;
            args.finish()?;
            Command::Forget { name }
        }
        "visibility" => {
            let mut args = Args::new(&defs::WS_VISIBILITY, words);
            let word = args.required("STATE")?;
            let state =
                Visibility::from_word(&word).ok_or(ParseError::BadVisibility { given: word })?;
            args.finish()?;
            Command::Visibility { state }
        }
        "close" => parse_ws_close(words)?,
        "call" => parse_ws_call(words)?,
        "read" => parse_ws_read(words)?,
        "wait" => parse_ws_wait(words)?,
        "who" => {
            let mut args = Args::strict(&defs::WS_WHO, words);
            let target = args.target()?;
            args.finish()?;
            Command::Who { target }
        }
        _ => {
            return Err(ParseError::UnknownSubcommand {
                command: "ws",
                sub,
                expected: defs::subcommands("ws"),
            })
        }
    };
    Ok(command)
}

/// Parses what follows `ws write`.
fn parse_ws_write(words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let mut args = Args::new(&defs::WS_WRITE, words);
    args.options()?;
    let target = args.target()?;
    let text = args.required("TEXT")?;
    let retain = args.retain(&target)?;
    args.finish_with(Command::Write {
        target,
        text,
        retain,
    })
}

/// Parses what follows `ws exec`.
fn parse_ws_exec(words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let mut args = Args::new(&defs::WS_EXEC, words);
    args.options()?;
    let target = args.target()?;
    let func = args.non_empty("FUNC")?;
    let arg = args.optional().unwrap_or_default();
    let retain = args.retain(&target)?;
    args.finish_with(Command::Exec {
        target,
        func,
        arg,
        retain,
    })
}

/// Parses what follows `ws close`: no TARGET is every page.
fn parse_ws_close(words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let mut args = Args::new(&defs::WS_CLOSE, words);
    args.options()?;
    let target = match args.optional() {
        Some(word) => parse_target(word)?,
        None => Target::All,
    };
    args.options()?;
    args.finish_with(Command::Close { target })
}

/// Parses what follows `ws call`.
fn parse_ws_call(words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let mut args = Args::strict(&defs::WS_CALL, words);
    args.options()?;
    let target = args.target()?;
    let func = args.non_empty("FUNC")?;
    // Options may follow FUNC and ARG too (`ws call kiosk f --timeout 2s`),
    // as for `ws read`: no JSON argument starts with `--`.
    args.options()?;
    let arg = args.optional().unwrap_or_default();
    args.options()?;
    let timeout = args.timeout();
    args.finish_with(Command::Call {
        target,
        func,
        arg,
        timeout,
    })
}

/// Parses what follows `ws read`.
fn parse_ws_read(words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let mut args = Args::strict(&defs::WS_READ, words);
    args.options()?;
    let target = args.target()?;
    args.options()?;
    let name = args.optional_name()?;
    args.options()?;
    let timeout = args.timeout();
    args.finish_with(Command::Read {
        target,
        name,
        timeout,
    })
}

/// Parses what follows `ws wait`.
fn parse_ws_wait(words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    let mut args = Args::strict(&defs::WS_WAIT, words);
    args.options()?;
    let name = args.name("NAME")?;
    args.options()?;
    let count = args.options.count.unwrap_or(1);
    let timeout = args.timeout();
    args.finish_with(Command::Wait {
        name,
        count,
        timeout,
    })
}

/// Parses what follows `set`.
fn parse_set(mut words: std::vec::IntoIter<String>) -> Result<Command, ParseError> {
    match words.next().as_deref() {
        Some("notify") => {
            let mut args = Args::new(&defs::SET_NOTIFY, words);
            let word = args.required("NAME")?;
            let name = if word == "off" {
                None
            } else {
                valid_name(&word)?;
                Some(word)
            };
            args.finish()?;
            Ok(Command::Notify { name })
        }
        Some(other) => Err(ParseError::UnknownSubcommand {
            command: "set",
            sub: other.to_string(),
            expected: defs::subcommands("set"),
        }),
        None => Err(ParseError::MissingSubcommand {
            command: "set",
            expected: defs::subcommands("set"),
        }),
    }
}

/// Reads a DURATION: a whole number and a unit, `s`, `m`, `h` or `d`
/// (`90s`, `20m`, `2h`), more than 0 and at most [`MAX_TTL`].
pub(crate) fn parse_ttl(word: &str) -> Result<Duration, ParseError> {
    let bad = || ParseError::BadDuration {
        given: word.to_string(),
    };
    let split = word.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = word.split_at(split);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = n
        .checked_mul(unit_secs)
        .filter(|&s| s > 0)
        .ok_or_else(bad)?;
    let d = Duration::from_secs(secs);
    if d > MAX_TTL {
        return Err(bad());
    }
    Ok(d)
}

/// Reads a TARGET word: `*`, an index, or a name.
fn parse_target(word: String) -> Result<Target, ParseError> {
    if word == "*" {
        return Ok(Target::All);
    }
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only way `parse` can fail is overflow.
        return match word.parse::<u64>() {
            Ok(0) => Err(ParseError::IndexZero),
            Ok(index) => Ok(Target::Index(index)),
            Err(_) => Err(ParseError::IndexTooLarge { index: word }),
        };
    }
    valid_name(&word)?;
    Ok(Target::Name(word))
}

/// The arguments after a command's name, read left to right, and the
/// options among them; errors name the command and its usage from the
/// table.
struct Args {
    def: &'static CommandDef,
    words: std::iter::Peekable<std::vec::IntoIter<String>>,
    options: Options,
    /// A TARGET or NAME starting with `--` is an option the command does
    /// not take: for commands that came with options, where no old line
    /// can mean a name like `--x`.
    strict: bool,
}

impl Args {
    fn new(def: &'static CommandDef, words: std::vec::IntoIter<String>) -> Self {
        Args {
            def,
            words: words.peekable(),
            options: Options::default(),
            strict: false,
        }
    }

    /// [`Args::new`] for a command whose names never start with `--`.
    fn strict(def: &'static CommandDef, words: std::vec::IntoIter<String>) -> Self {
        Args {
            strict: true,
            ..Args::new(def, words)
        }
    }

    /// `word`, unless it is an option this command does not take.
    fn not_option(&self, word: String) -> Result<String, ParseError> {
        if self.strict && word.starts_with("--") {
            return Err(ParseError::UnknownOption {
                command: self.def.name,
                option: word,
                usage: self.def.usage,
            });
        }
        Ok(word)
    }

    /// Takes the command's own options at this point of the line, with
    /// their values. Any other word, `--` or not, is left as an argument.
    fn options(&mut self) -> Result<(), ParseError> {
        let def = self.def;
        while let Some(option) = self
            .words
            .peek()
            .and_then(|word| def.options.iter().find(|o| o.name == word.as_str()))
        {
            self.words.next();
            let value = match option.value {
                Some(what) => self.required(what)?,
                None => String::new(),
            };
            (option.set)(&mut self.options, &value)
                .map_err(|problem| self.invalid(option, problem))?;
        }
        Ok(())
    }

    fn invalid(&self, option: &'static OptionDef, problem: String) -> ParseError {
        ParseError::InvalidOption {
            command: self.def.name,
            option: option.name,
            problem,
            usage: self.def.usage,
        }
    }

    /// The `--timeout` given, or the default.
    fn timeout(&self) -> Duration {
        self.options.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    fn optional(&mut self) -> Option<String> {
        self.words.next()
    }

    fn required(&mut self, what: &'static str) -> Result<String, ParseError> {
        self.words.next().ok_or(ParseError::MissingArgument {
            command: self.def.name,
            what,
            usage: self.def.usage,
        })
    }

    fn non_empty(&mut self, what: &'static str) -> Result<String, ParseError> {
        let word = self.required(what)?;
        if word.is_empty() {
            return Err(ParseError::EmptyArgument {
                command: self.def.name,
                what,
                usage: self.def.usage,
            });
        }
        Ok(word)
    }

    fn name(&mut self, what: &'static str) -> Result<String, ParseError> {
        let word = self.required(what)?;
        let word = self.not_option(word)?;
        valid_name(&word)?;
        Ok(word)
    }

    fn optional_name(&mut self) -> Result<Option<String>, ParseError> {
        match self.optional() {
            Some(word) => {
                let word = self.not_option(word)?;
                valid_name(&word)?;
                Ok(Some(word))
            }
            None => Ok(None),
        }
    }

    fn target(&mut self) -> Result<Target, ParseError> {
        let word = self.required("TARGET")?;
        parse_target(self.not_option(word)?)
    }

    /// `--retain` and `--ttl` as given, checked against `target`: a value
    /// is kept per name, and `--ttl` means nothing without `--retain`.
    fn retain(&self, target: &Target) -> Result<Option<Retain>, ParseError> {
        let o = &self.options;
        let bad = |why| ParseError::BadOption {
            command: self.def.name,
            why,
            usage: self.def.usage,
        };
        if !o.retain {
            return match o.ttl {
                Some(_) => Err(bad("--ttl needs --retain")),
                None => Ok(None),
            };
        }
        if o.wait || o.dry_run {
            return Err(bad("--retain does not go with --wait or --dry-run"));
        }
        if !matches!(target, Target::Name(_)) {
            return Err(bad(
                "--retain needs a NAME as TARGET (a value is kept per name), not an index or *",
            ));
        }
        Ok(Some(Retain { ttl: o.ttl }))
    }

    /// Refuses leftovers: a forgotten pair of quotes must not silently drop
    /// the end of the text.
    fn finish(&mut self) -> Result<(), ParseError> {
        match self.words.next() {
            None => Ok(()),
            // Where options are read, any word left that looks like one is
            // one the command does not take.
            Some(arg) if arg.starts_with("--") && !self.def.options.is_empty() => {
                Err(ParseError::UnknownOption {
                    command: self.def.name,
                    option: arg,
                    usage: self.def.usage,
                })
            }
            Some(arg) => Err(ParseError::ExtraArgument {
                command: self.def.name,
                arg,
                usage: self.def.usage,
                hint: self.def.extra_hint,
            }),
        }
    }

    /// [`Args::finish`], then `cmd` as its options make it.
    fn finish_with(mut self, cmd: Command) -> Result<Command, ParseError> {
        self.finish()?;
        self.wrap(cmd)
    }

    /// `cmd` wrapped as the options ask: `--wait` makes it wait for
    /// confirmations, `--dry-run` only shows whom it would reach.
    fn wrap(self, mut cmd: Command) -> Result<Command, ParseError> {
        let o = &self.options;
        let waits = matches!(cmd, Command::Write { .. } | Command::Exec { .. });
        if waits && o.timeout.is_some() && !o.wait {
            return Err(self.invalid(&options::TIMEOUT, "only with --wait".into()));
        }
        if o.wait {
            cmd = Command::Confirm {
                cmd: Box::new(cmd),
                timeout: self.timeout(),
            };
        }
        if o.dry_run {
            cmd = Command::DryRun(Box::new(cmd));
        }
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests;
