//! Runs one command line from one door against the hub and returns a Reply.
//!
//! Every door (console, control socket, HTTP, a page's own WebSocket) calls
//! [`Executor::run_line`] and renders the [`Reply`] its own way, so the same
//! line gives the same output everywhere. Parsing knows syntax only; this
//! module knows meaning: whether index 7 is live and whether this door may
//! run the command.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::base::command::{self, Command, Retain, Target};
use crate::base::door::{Door, Reply, Status};
use crate::base::protocol::{self, Answer};
use crate::base::text;
use crate::engine::actions::{Actions, Output, Requester, RunningAction};
use crate::engine::asks::{self, Request};
#[cfg(test)]
use crate::engine::backplane::Listing;
use crate::engine::backplane::{Answers, Backplane, Delivery, Listed};
use crate::engine::hub::{Hub, TargetError};
use crate::engine::remember::retained::Change;
use crate::engine::remember::Remember;

/// `[pages]` in the configuration file: what pages may do.
#[derive(clap::Args, serde::Serialize, serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PagesSettings {
    /// Commands a page may run over its WebSocket (or /shell without
    /// operator rights), by name: "ws register", "run", "ws write", ...
    #[arg(
        id = "pages_allow",
        long = "pages-allow",
        value_name = "COMMAND",
        help_heading = "Pages ([pages] in the file)"
    )]
    pub(crate) allow: Vec<String>,
}

impl Default for PagesSettings {
    fn default() -> Self {
        PagesSettings {
            allow: PageRights::default().allowed,
        }
    }
}

/// What pages may run over their own WebSocket, by command name
/// (`Command::name`). The default is `ws register` and `run`.
#[derive(Clone, Debug)]
pub struct PageRights {
    allowed: Vec<String>,
}

impl Default for PageRights {
    fn default() -> Self {
        PageRights {
            allowed: vec!["ws register".into(), "run".into()],
        }
    }
}

impl PageRights {
    /// Rights from a configured list of command names.
    pub fn new(allowed: Vec<String>) -> Self {
        PageRights { allowed }
    }

    /// The first right `cmd` takes that pages do not have, if any.
    fn missing(&self, cmd: &Command) -> Option<&'static str> {
        cmd.rights()
            .find(|right| !self.allowed.iter().any(|a| a == right))
    }
}

/// Commands run, by door and result, for `/metrics`.
#[derive(Default, Debug)]
pub(crate) struct CommandCounters {
    counts: [[AtomicU64; 2]; Door::LABELS.len()],
}

impl CommandCounters {
    /// (door, ok, count) for every door and result.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, bool, u64)> {
        let mut out = Vec::new();
        for (door, row) in Door::LABELS.iter().zip(&self.counts) {
            out.push((*door, true, row[1].load(Relaxed)));
            out.push((*door, false, row[0].load(Relaxed)));
        }
        out
    }
}

struct Inner {
    hub: Hub,
    page_rights: PageRights,
    notify: watch::Sender<Option<String>>,
    counters: CommandCounters,
    actions: Actions,
    backplane: Arc<dyn Backplane>,
    remember: Arc<Remember>,
}

/// Runs command lines; cheap to clone, one per door.
#[derive(Clone)]
pub(crate) struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// An executor whose `ws` commands reach the connections of `backplane`
    /// (a daemon's own hub, or a cluster's with `--redis`), running the
    /// configured `actions`.
    pub(crate) fn new(
        backplane: Arc<dyn Backplane>,
        page_rights: PageRights,
        actions: Actions,
        remember: Arc<Remember>,
    ) -> Self {
        let (notify, _) = watch::channel(None);
        Executor {
            inner: Arc::new(Inner {
                hub: backplane.hub().clone(),
                page_rights,
                notify,
                counters: CommandCounters::default(),
                actions,
                backplane,
                remember,
            }),
        }
    }

    /// Commands run so far, by door and result.
    pub(crate) fn counters(&self) -> &CommandCounters {
        &self.inner.counters
    }

    /// This daemon's node id in a cluster; `None` on its own.
    pub(crate) fn node(&self) -> Option<Arc<str>> {
        self.inner.backplane.node()
    }

    /// The element Monitor lines go to while `set notify` is on.
    pub(crate) fn notify_target(&self) -> watch::Receiver<Option<String>> {
        self.inner.notify.subscribe()
    }

    /// How many pages hold `name` now, on every node (`GET /probe/NAME`).
    pub(crate) async fn named(&self, name: &str) -> crate::engine::backplane::Counted {
        self.inner.backplane.named(name).await
    }

    /// Parses and runs `line` on behalf of `door`.
    ///
    /// The reply's output is escaped ([`crate::base::text::escape_lines`]): every
    /// door may show it on a terminal (the CLI, `pagewire console`, curl on
    /// `/shell`), so none of it may act as a control sequence there.
    pub(crate) async fn run_line(&self, line: &str, door: Door) -> Reply {
        let (mut reply, reported, name) = match command::parse(line) {
            // A page's registration has its own Monitor line ("ws 7
            // registered 'status'"); a second one per page would double
            // what thousands of pages opening cost the Monitor. A page's
            // visibility changes with every switch of tabs: it is shown by
            // `ws`, not logged.
            Ok(cmd @ (Command::Register { .. } | Command::Visibility { .. })) => {
                let name = cmd.name();
                let reply = self.run(cmd, door).await;
                let reported = reply.is_ok() && matches!(door, Door::Page(_));
                (reply, reported, name)
            }
            Ok(cmd) => {
                let name = cmd.name();
                (self.run(cmd, door).await, false, name)
            }
            Err(e) => (Reply::err(e), false, "(unreadable line)"),
        };
        if let Cow::Owned(escaped) = crate::base::text::escape_lines(&reply.output) {
            reply.output = escaped;
        }
        let slot = &self.inner.counters.counts[door.slot()][usize::from(reply.is_ok())];
        slot.fetch_add(1, Relaxed);
        if reported {
            return reply;
        }
        let first = reply.output.lines().next().unwrap_or("");
        let more = if reply.output.lines().nth(1).is_some() {
            " ..."
        } else {
            ""
        };
        let event = format_args!(
            "{door}: {} -> {}: {first}{more}",
            line.trim(),
            if reply.is_ok() { "ok" } else { "error" },
        );
        let monitor = self.inner.hub.monitor();
        if reply.is_ok() {
            monitor.emit(event);
        } else {
            // A page (or anyone without the token) can send failing lines
            // as fast as it likes, each different: one kind per door and
            // command, so that a flood of them is summarised.
            let from = match door {
                Door::Page(_) => "page *",
                other => other.label(),
            };
            monitor.emit_summarised(format_args!("{from}: {name} -> error"), event);
        }
        reply
    }

    /// Runs a parsed command on behalf of `door`.
    pub(crate) async fn run(&self, cmd: Command, door: Door) -> Reply {
        let operator = door.is_operator();
        // A page's report of its own visibility concerns nothing else.
        let own_report = matches!(cmd, Command::Visibility { .. });
        if !operator && !own_report {
            if let Some(right) = self.inner.page_rights.missing(&cmd) {
                return self.needs_operator(&cmd, right, door);
            }
        }
        match cmd {
            Command::List => self.list().await,
            Command::Register { name } => self.register(door, &name),
            Command::Write {
                target,
                text,
                retain,
            } => self.write(&target, text, retain).await,
            Command::Exec {
                target,
                func,
                arg,
                retain,
            } => self.exec(&target, func, arg, retain).await,
            Command::Retained => self.retained().await,
            Command::Forget { name } => self.forget(&name).await,
            Command::Visibility { state } => self.visibility(door, state),
            Command::Close { target } => self.close(&target).await,
            Command::Notify { name } => self.notify(name),
            Command::Run { action, args, to } => self.start_run(&action, args, to, door).await,
            Command::Help { topic } => match command::help_text(topic.as_deref()) {
                Ok(text) => Reply::ok(text),
                Err(e) => Reply::err(e),
            },
            Command::Call {
                target,
                func,
                arg,
                timeout,
            } => {
                self.call(&target, Request::Call { func, arg }, timeout)
                    .await
            }
            Command::Read {
                target,
                name,
                timeout,
            } => self.read(&target, Request::Read { name }, timeout).await,
            Command::Wait {
                name,
                count,
                timeout,
            } => self.wait(&name, count, timeout).await,
            Command::Who { target } => self.who(&target, None).await,
            Command::DryRun(cmd) => match cmd.target() {
                Some(target) => self.who(target, Some(cmd.name())).await,
                // The parser gives --dry-run to commands with a TARGET only.
                None => Reply::err(format!("{}: --dry-run needs a TARGET", cmd.name())),
            },
            Command::Confirm { cmd, timeout } => self.run_confirmed(*cmd, timeout).await,
        }
    }

    /// `ws write TARGET TEXT`.
    async fn write(&self, target: &Target, text: String, retain: Option<Retain>) -> Reply {
        let console = crate::base::text::escape(&text).into_owned();
        let msg = Delivery::Write { text };
        // One line, as text: the console is the operator's terminal, and
        // the text may come from a page.
        self.send(target, &msg, retain, "ws write", |why| {
            (format!("{why}; printed on the console"), Some(console))
        })
        .await
    }

    /// `ws exec TARGET FUNC [ARG]`.
    async fn exec(
        &self,
        target: &Target,
        func: String,
        arg: String,
        retain: Option<Retain>,
    ) -> Reply {
        let msg = Delivery::Exec { func, arg };
        self.send(target, &msg, retain, "ws exec", |why| {
            (format!("{why}; nothing sent"), None)
        })
        .await
    }

    /// `ws retained`: the values kept for names.
    async fn retained(&self) -> Reply {
        match self.inner.remember.retained.listing().await {
            Ok((listing, problems)) => {
                let monitor = self.inner.hub.monitor();
                for problem in problems {
                    monitor.emit(format_args!("ws retained: {problem}"));
                }
                Reply::ok(listing)
            }
            Err(e) => Reply::err(format!("ws retained: {e}")),
        }
    }

    /// `ws close [TARGET]`.
    async fn close(&self, target: &Target) -> Reply {
        match self.inner.backplane.close(target).await {
            Ok(o) => Reply::ok(with_notes(
                format!("closed {}", plural(o.reached, "connection")),
                &o.notes,
            )),
            Err(e) => Reply::err(format!("ws close: {e}")),
        }
    }

    /// `set notify [NAME]`: where the Monitor goes on every page, if anywhere.
    fn notify(&self, name: Option<String>) -> Reply {
        let out = match &name {
            Some(n) => format!("notify on: Monitor lines go to element '{n}' on every page"),
            None => "notify off".to_string(),
        };
        self.inner.notify.send_replace(name);
        Reply::ok(out)
    }

    /// `run ACTION [ARGS] [--to TARGET]` on behalf of `door`.
    async fn start_run(
        &self,
        action: &str,
        args: Vec<String>,
        to: Option<Target>,
        door: Door,
    ) -> Reply {
        let output = match run_output(door, door.is_operator(), to) {
            Ok(output) => output,
            Err(reply) => return reply,
        };
        let requester = Requester { door, output };
        let started = self
            .inner
            .actions
            .start(action, args, requester, &self.inner.hub);
        started.await.map_or_else(Reply::err, Reply::ok)
    }

    /// `ws register NAME`, which only a page sends, for itself.
    fn register(&self, door: Door, name: &str) -> Reply {
        match door {
            Door::Page(id) => match self.inner.hub.register(id, name) {
                Ok(()) => Reply::ok(format!("registered '{name}' on connection {id}")),
                Err(e) => Reply::err(format!("ws register: {e}")),
            },
            _ => Reply::err(
                "ws register: only a page can register, over its own WebSocket \
                 (wsInit('name') in ws.js)",
            ),
        }
    }

    /// `ws visibility STATE`, which only a page sends, about itself.
    fn visibility(&self, door: Door, state: command::Visibility) -> Reply {
        match door {
            Door::Page(id) if self.inner.hub.set_visibility(id, state) => {
                Reply::ok(format!("connection {id} is {}", state.word()))
            }
            Door::Page(id) => Reply::err(format!("ws visibility: connection {id} is closed")),
            _ => Reply::err(
                "ws visibility: only a page reports its visibility, over its own WebSocket",
            ),
        }
    }

    /// `ws call`: one line per page, its value as JSON or what went wrong.
    async fn call(&self, target: &Target, request: Request, timeout: Duration) -> Reply {
        match self.ask(target, &request, timeout, "ws call").await {
            Ok(a) => answered(a, |out, answer| match answer {
                Answer::Value(json) => out.push_str(&text::escape(json)),
                other => show_other(out, other),
            }),
            Err(reply) => reply,
        }
    }

    /// `ws read`: one line per page, the text its element shows.
    async fn read(&self, target: &Target, request: Request, timeout: Duration) -> Reply {
        match self.ask(target, &request, timeout, "ws read").await {
            Ok(a) => answered(a, show_text),
            Err(reply) => reply,
        }
    }

    /// `ws` (the listing): rendered as it is read, so a cluster's rows are
    /// never all held at once, only their text; then the running actions.
    async fn list(&self) -> Reply {
        let mut rows = String::new();
        let notes = self
            .inner
            .backplane
            .list(&mut |listed| render_row(&mut rows, &listed))
            .await;
        let mut out = finish_list(rows, &notes);
        for run in self.inner.actions.running() {
            out.push('\n');
            out.push_str(&render_run(&run));
        }
        Reply::ok(out)
    }

    /// `ws forget NAME`, here and, in a cluster, on every node.
    async fn forget(&self, name: &str) -> Reply {
        match self.inner.remember.retained.forget(name).await {
            Ok(0) => Reply::ok(format!("nothing retained for '{name}'")),
            Ok(n) => {
                let change = Change::Forget {
                    name: name.to_string(),
                };
                let notes = self.inner.backplane.share_retained(change.to_json()).await;
                Reply::ok(with_notes(
                    format!("forgot {} of '{name}'", plural(n, "retained value")),
                    &notes,
                ))
            }
            Err(e) => Reply::err(format!("ws forget: {e}")),
        }
    }

    /// `ws wait NAME`: until `count` pages hold it or `timeout` passed.
    async fn wait(&self, name: &str, count: usize, timeout: Duration) -> Reply {
        let c = self.inner.backplane.wait_named(name, count, timeout).await;
        let held = format!("{} registered '{name}'", plural(c.count, "connection"));
        let (status, out) = if c.count >= count {
            (Status::Ok, held)
        } else {
            let out = format!(
                "timed out after {}: {held}, {count} wanted",
                text::duration(timeout)
            );
            (Status::Partial, out)
        };
        Reply::with(status, with_notes(out, &c.notes))
    }

    /// A write or exec with `--wait`: the pages are asked to confirm; it
    /// keeps nothing (the parser refuses `--retain` with `--wait`).
    async fn run_confirmed(&self, cmd: Command, timeout: Duration) -> Reply {
        match cmd {
            Command::Write { target, text, .. } => {
                let console = crate::base::text::escape(&text).into_owned();
                let request = Request::Write { text };
                self.confirm(&target, request, timeout, "ws write", Some(console))
                    .await
            }
            Command::Exec {
                target, func, arg, ..
            } => {
                let request = Request::Exec { func, arg };
                self.confirm(&target, request, timeout, "ws exec", None)
                    .await
            }
            other => Reply::err(format!("{}: --wait is not for this command", other.name())),
        }
    }

    /// The refusal of a command that needs operator rights.
    /// The refusal of `cmd`, which takes `right`, to a door without it.
    fn needs_operator(&self, cmd: &Command, right: &str, door: Door) -> Reply {
        let what = if right == cmd.name() {
            format!("'{right}'")
        } else {
            format!("'{} --dry-run' lists what '{right}' lists: it", cmd.name())
        };
        let msg = format!(
            "{what} needs operator rights; pages may only use {}",
            self.page_rights_list()
        );
        if matches!(door, Door::Http { .. }) {
            Reply::denied(format!("{msg} (send Authorization: Bearer TOKEN)"))
        } else {
            Reply::denied(msg)
        }
    }

    fn page_rights_list(&self) -> String {
        let list: Vec<String> = self
            .inner
            .page_rights
            .allowed
            .iter()
            .map(|a| format!("'{a}'"))
            .collect();
        list.join(" and ")
    }

    /// Sends `msg` through the backplane and words the outcome; `nobody`
    /// words the case where nothing matched, and gives what to print on
    /// this daemon's console then (`ws write` prints its text there). With
    /// `retain`, the value is kept (durably) first, and retained writes
    /// take turns until each is delivered.
    async fn send(
        &self,
        target: &Target,
        msg: &Delivery,
        retain: Option<Retain>,
        what: &str,
        nobody: impl FnOnce(&str) -> (String, Option<String>),
    ) -> Reply {
        let (Some(retain), Target::Name(name)) = (retain, target) else {
            return self.deliver(target, msg, what, nobody, "").await;
        };
        let remember = &self.inner.remember;
        let (turn, record) = match remember.retained.keep(name, msg, retain.ttl).await {
            Ok(kept) => kept,
            Err(e) => return Reply::err(format!("{what}: {e}; nothing sent")),
        };
        // The other nodes of a cluster hold it before it is delivered, so
        // that a page registering anywhere afterwards gets it.
        let shared = self
            .inner
            .backplane
            .share_retained(Change::Keep { record }.to_json())
            .await;
        let mut kept = format!("; retained for pages that register '{name}'");
        if let Some(ttl) = retain.ttl {
            let _ = write!(kept, " for {}", text::age(ttl));
        }
        // A cluster node keeps it in Redis, not in its state directory.
        if !remember.is_durable() && self.inner.backplane.node().is_none() {
            kept.push_str(" (until the daemon stops: it has no state directory)");
        }
        let mut reply = self.deliver(target, msg, what, nobody, &kept).await;
        drop(turn);
        reply.output = with_notes(reply.output, &shared);
        reply
    }

    /// The delivery of [`Executor::send`]; `kept` ends the first line.
    async fn deliver(
        &self,
        target: &Target,
        msg: &Delivery,
        what: &str,
        nobody: impl FnOnce(&str) -> (String, Option<String>),
        kept: &str,
    ) -> Reply {
        match self.inner.backplane.send(target, msg).await {
            Err(e) => Reply::err(format!("{what}: {e}")),
            Ok(o) if o.reached == 0 && o.dropped == 0 => {
                let why = no_match(target, o.live);
                let (output, console) = nobody(&why);
                Reply {
                    console,
                    ..Reply::ok(with_notes(output + kept, &o.notes))
                }
            }
            Ok(o) => {
                let mut out = format!("sent to {}", plural(o.reached, "connection"));
                if o.dropped > 0 {
                    let _ = write!(out, " ({} closed as slow consumers)", o.dropped);
                }
                out.push_str(kept);
                Reply::ok(with_notes(out, &o.notes))
            }
        }
    }
}

impl Executor {
    /// Asks the pages `target` selects, on every node, and waits for their
    /// answers. A target that reaches no page is an error: a command that
    /// waits for answers must not succeed with nobody to give one.
    async fn ask(
        &self,
        target: &Target,
        request: &Request,
        timeout: Duration,
        what: &str,
    ) -> Result<Answers, Reply> {
        match self.inner.backplane.ask(target, request, timeout).await {
            Err(e) => Err(Reply::err(format!("{what}: {e}"))),
            Ok(a) if a.answers.is_empty() => {
                let mut why = format!("{what}: {}", no_match(target, a.live));
                if a.dropped > 0 {
                    let _ = write!(why, " ({} closed as slow consumers)", a.dropped);
                }
                Err(Reply {
                    results: Some(Vec::new()),
                    ..Reply::err(with_notes(why, &a.notes))
                })
            }
            Ok(a) => Ok(a),
        }
    }

    /// `ws write --wait` and `ws exec --wait`: delivers, then waits for
    /// every page's confirmation. `console` is what a write shows on this
    /// daemon's console when no page matched (as without `--wait`).
    async fn confirm(
        &self,
        target: &Target,
        request: Request,
        timeout: Duration,
        what: &str,
        console: Option<String>,
    ) -> Reply {
        let a = match self.ask(target, &request, timeout, what).await {
            Ok(a) => a,
            // Nobody matched (rather than an unknown index): a write's text
            // goes to the console, as without --wait.
            Err(mut reply) if reply.results.is_some() => {
                if console.is_some() {
                    let end = reply.output.find('\n').unwrap_or(reply.output.len());
                    reply.output.insert_str(end, "; printed on the console");
                }
                return Reply { console, ..reply };
            }
            Err(reply) => return reply,
        };
        // A page closed as a slow consumer instead is among the answers,
        // with that error: it did not confirm, and is named below.
        let sent = a.answers.len();
        let confirmed = a.answers.iter().filter(|p| p.is_ok()).count();
        let dropped = a
            .answers
            .iter()
            .filter(|p| matches!(&p.answer, Answer::Error(e) if e == asks::SLOW_CONSUMER))
            .count();
        let mut out = format!("sent to {}", plural(sent - dropped, "connection"));
        if dropped > 0 {
            let _ = write!(out, " ({dropped} closed as slow consumers)");
        }
        let met = a.unanswered == 0;
        if confirmed == sent && met {
            out.push_str("; all confirmed");
        } else if confirmed == sent {
            // The pages of a node that did not answer are in its note.
            let _ = write!(out, "; {confirmed} confirmed");
        } else {
            let missing: Vec<String> = a
                .answers
                .iter()
                .filter_map(|p| match &p.answer {
                    Answer::Error(why) => Some(format!("{} ({})", p.index, text::escape(why))),
                    _ => None,
                })
                .collect();
            let _ = write!(
                out,
                "; {confirmed} confirmed; not confirmed within {}: {}",
                text::duration(timeout),
                missing.join(", ")
            );
        }
        Reply::answered(with_notes(out, &a.notes), a.answers, met)
    }

    /// `ws who TARGET`, and `--dry-run` of the command `dry_run` names:
    /// exactly the connections the target reaches now, nothing sent.
    async fn who(&self, target: &Target, dry_run: Option<&str>) -> Reply {
        // Rendered as read, as `ws` is: only the matching rows' text is
        // kept, never a cluster's whole table.
        let (mut rows, mut live, mut n) = (String::new(), 0, 0);
        let notes = self
            .inner
            .backplane
            .list(&mut |listed| {
                live += 1;
                if reaches(target, &listed) {
                    n += 1;
                    render_row(&mut rows, &listed);
                }
            })
            .await;
        if let (Target::Index(i), 0) = (target, n) {
            let error = TargetError::NoSuchIndex(*i);
            let what = dry_run.unwrap_or("ws who");
            return Reply::err(with_notes(format!("{what}: {error}"), &notes));
        }
        let mut out = match dry_run {
            Some(what) => format!(
                "dry run: {what} would reach {}; nothing was sent\n",
                plural(n, "connection")
            ),
            None => String::new(),
        };
        if n == 0 {
            out.push_str(&no_match(target, live));
            for note in &notes {
                let _ = write!(out, "\nnote: {}", text::Escaped(note));
            }
            return Reply::ok(out);
        }
        out.push_str(&finish_list(rows, &notes));
        Reply::ok(out)
    }
}

/// Whether `target` selects the listed connection.
fn reaches(target: &Target, c: &Listed) -> bool {
    match target {
        Target::Index(i) => c.info.id == *i,
        Target::Name(n) => c.info.names.iter().any(|m| m == n),
        Target::All => true,
    }
}

/// Why a target reached no connection, `live` being how many there are.
fn no_match(target: &Target, live: usize) -> String {
    match target {
        Target::Name(n) if live > 0 => format!("no connection named '{n}'"),
        _ => "no WebSocket connections".to_string(),
    }
}

/// The longest text `ws read` prints per page, in characters.
pub(crate) const READ_MAX_CHARS: usize = 1000;

/// The reply of a command that gathered answers: one line per page, its
/// index first, then what `show` makes of its answer; then the notes. Ok
/// when every page answered without an error, on every node.
fn answered(a: Answers, show: impl Fn(&mut String, &Answer)) -> Reply {
    let mut out = String::new();
    for p in &a.answers {
        let _ = write!(out, "{} ", p.index);
        show(&mut out, &p.answer);
        out.push('\n');
    }
    // A page closed as a slow consumer instead has its line above, with
    // that error, and fails the command as any error does.
    out.truncate(out.trim_end().len());
    // A node that did not answer had targets that did not either.
    let met = a.unanswered == 0;
    Reply::answered(with_notes(out, &a.notes), a.answers, met)
}

/// An error, or a confirmation where a value was expected. Text from a
/// page is escaped here, field by field: a newline in it must not start a
/// line of its own.
fn show_other(out: &mut String, answer: &Answer) {
    match answer {
        Answer::Error(why) => {
            let _ = write!(out, "error: {}", text::escape(why));
        }
        Answer::Value(json) => out.push_str(&text::escape(json)),
        Answer::Done => out.push_str("ok"),
    }
}

/// What `ws read` prints for a page: the text it answered, escaped and cut
/// after [`READ_MAX_CHARS`] characters.
fn show_text(out: &mut String, answer: &Answer) {
    match answer {
        Answer::Value(json) => match serde_json::from_str::<String>(json) {
            Ok(text) => out.push_str(&text::escape(&protocol::cut(&text, READ_MAX_CHARS))),
            Err(_) => out.push_str("error: the page answered no text"),
        },
        other => show_other(out, other),
    }
}

/// Where the output of `run` goes, from the door, its rights and `--to`.
///
/// A page's own runs stream to the page itself; `--to` with its own index
/// means the same. Only operator rights may send a run's output to another
/// connection: a caller with a page's rights over HTTP has no connection of
/// its own, and naming one proves nothing (indexes are small and listed in
/// every `hello`), so its `--to` is refused and its runs go to the Monitor.
fn run_output(door: Door, operator: bool, to: Option<Target>) -> Result<Output, Reply> {
    match (door, to) {
        (Door::Page(id), None) => Ok(Output::Page(id)),
        (Door::Page(id), Some(Target::Index(i))) if i == id => Ok(Output::Page(id)),
        (Door::Page(_), Some(_)) => Err(Reply::denied(
            "run: a page's action output goes to the page itself; --to TARGET needs \
             operator rights",
        )),
        (_, None) => Ok(Output::Monitor),
        (_, Some(target)) if operator => Ok(Output::To(target)),
        (_, Some(_)) => Err(Reply::denied(
            "run: --to TARGET needs operator rights (send Authorization: Bearer TOKEN); \
             without them the output goes to the Monitor only, or run it from the page \
             over its WebSocket",
        )),
    }
}

/// One `ws` listing line for a running action. It starts with `action`,
/// never a digit, so that clients counting connection lines (those that
/// start with an index) are not misled.
pub(crate) fn render_run(run: &RunningAction) -> String {
    let from = match run.door {
        Door::Page(id) => format!("page:{id}"),
        other => other.label().to_string(),
    };
    let pid = run.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
    format!(
        "action {} run={} pid={pid} from={from} to={} age={}",
        run.action,
        run.run,
        run.output,
        text::age(run.age)
    )
}

/// Appends what the backplane could not reach, one `note:` line each.
fn with_notes(mut out: String, notes: &[String]) -> String {
    for note in notes {
        let _ = write!(out, "\nnote: {note}");
    }
    out
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Renders the `ws` listing: one line per connection, the index first, and
/// in a cluster the node that holds it last; then a `note:` line for each
/// node that could not be asked. Every field that is text is escaped
/// ([`crate::base::text::Escaped`]), so that none can start a line of its own:
/// names and nodes may come from another node of a cluster.
#[cfg(test)]
pub(crate) fn render_list(listing: &Listing) -> String {
    let mut rows = String::new();
    for listed in &listing.conns {
        render_row(&mut rows, listed);
    }
    finish_list(rows, &listing.notes)
}

/// Appends one connection's line of the `ws` listing to `out`.
fn render_row(out: &mut String, listed: &Listed) {
    use crate::base::text::Escaped;
    let c = &listed.info;
    let names = if c.names.is_empty() {
        "-".to_string()
    } else {
        Escaped(&c.names.join(",")).to_string()
    };
    let page = if c.page.is_empty() { "-" } else { &c.page };
    let _ = write!(
        out,
        "{} names={} remote={} age={} idle={} visibility={} in={}msg/{}B out={}msg/{}B page={}",
        c.id,
        names,
        c.remote,
        text::age(c.age),
        text::age(c.idle),
        c.visibility.map_or("-", |v| v.word()),
        c.msgs_in,
        c.bytes_in,
        c.msgs_out,
        c.bytes_out,
        Escaped(page)
    );
    if let Some(node) = &listed.node {
        let _ = write!(out, " node={}", Escaped(node));
    }
    out.push('\n');
}

/// The listing from its rendered `rows`: a line saying there are none if
/// so, then a `note:` line for each note.
fn finish_list(mut out: String, notes: &[String]) -> String {
    use crate::base::text::Escaped;
    if out.is_empty() {
        out.push_str("no WebSocket connections\n");
    }
    for note in notes {
        let _ = writeln!(out, "note: {}", Escaped(note));
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn run_output_follows_rights() {
        let idx = Target::Index;
        let named = || Target::Name("status".into());
        let http = Door::Http { operator: false };
        assert_eq!(run_output(Door::Page(3), false, None), Ok(Output::Page(3)));
        assert_eq!(
            run_output(Door::Page(3), false, Some(idx(3))),
            Ok(Output::Page(3))
        );
        assert!(run_output(Door::Page(3), false, Some(idx(4))).is_err());
        assert!(run_output(Door::Page(3), false, Some(Target::All)).is_err());
        assert_eq!(run_output(Door::Console, true, None), Ok(Output::Monitor));
        assert_eq!(
            run_output(Door::Control, true, Some(named())),
            Ok(Output::To(named()))
        );
        assert_eq!(
            run_output(Door::Http { operator: true }, true, Some(idx(5))),
            Ok(Output::To(idx(5)))
        );
        assert_eq!(run_output(http, false, None), Ok(Output::Monitor));
        // A page's rights over HTTP reach no connection, not even by index.
        for to in [idx(5), named(), Target::All] {
            let denied = run_output(http, false, Some(to)).expect_err("denied");
            assert_eq!(denied.status, crate::base::door::Status::Denied);
        }
    }

    /// Runs `line` from `door` against a hub holding two pages (1 and 2)
    /// and returns the reply and the frames page 2 was sent.
    async fn from_page_rights(door: Door, rights: PageRights, line: &str) -> (Reply, usize) {
        use crate::engine::hub::HubLimits;
        use crate::engine::monitor::Monitor;
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote = "127.0.0.1:1".parse().expect("address");
        let one = hub.open(remote, "").expect("page 1");
        let two = hub.open(remote, "").expect("page 2");
        hub.register(2, "other").expect("register");
        let backplane = crate::engine::backplane::Local::shared(hub.clone());
        let remember = Arc::new(Remember::in_memory());
        let exec = Executor::new(backplane, rights, Actions::default(), remember);
        let reply = exec.run_line(line, door).await;
        let waker = futures_util::task::noop_waker();
        let mut sent = 0;
        while let crate::engine::hub::Next::Frames(f) = two.next_out(&waker) {
            sent += f.len();
        }
        drop(one);
        (reply, sent)
    }

    /// The first frame queued for `conn`.
    fn first_frame(conn: &crate::engine::hub::Conn) -> bytes::Bytes {
        let waker = futures_util::task::noop_waker();
        match conn.next_out(&waker) {
            crate::engine::hub::Next::Frames(f) => f.iter().next().expect("a frame").clone(),
            _ => panic!("nothing queued"),
        }
    }

    #[tokio::test]
    async fn a_retained_write_to_many_pages_is_encoded_once() {
        use crate::engine::hub::HubLimits;
        use crate::engine::monitor::Monitor;
        const PAGES: usize = 10_000;
        let limits = HubLimits {
            max_connections: PAGES + 2,
            max_connections_per_ip: PAGES + 2,
            ..HubLimits::default()
        };
        let hub = Hub::new(limits, Monitor::new());
        let remember = Arc::new(Remember::in_memory());
        let (out, _printed) = crate::base::stdout::ConsoleOut::capture();
        let engine = crate::engine::Engine::new(
            crate::engine::backplane::Local::shared(hub.clone()),
            PageRights::default(),
            Actions::default(),
            out,
            remember,
        );
        let remote = "127.0.0.1:1".parse().expect("address");
        let pages: Vec<_> = (0..PAGES)
            .map(|_| {
                let conn = hub.open(remote, "").expect("page");
                hub.register(conn.id(), "wall").expect("register");
                conn
            })
            .collect();
        let reply = engine
            .exec
            .run_line("ws write --retain wall hi", Door::Control)
            .await;
        assert!(reply.is_ok(), "{reply:?}");
        let first = first_frame(&pages[0]);
        for conn in &pages[1..] {
            let frame = first_frame(conn);
            assert_eq!(frame.as_ptr(), first.as_ptr(), "one buffer for every page");
        }
        // A page that registers later gets the retained frame, encoded
        // when the value was kept, not for it.
        let late = hub.open(remote, "").expect("late page");
        hub.register(late.id(), "wall").expect("register");
        let replayed = first_frame(&late);
        assert_eq!(replayed, first);
        let again = hub.open(remote, "").expect("another");
        hub.register(again.id(), "wall").expect("register");
        assert_eq!(first_frame(&again).as_ptr(), replayed.as_ptr());
    }

    #[tokio::test]
    async fn a_pages_rights_never_reach_another_page() {
        let every_command = [
            "ws",
            "ws register mine",
            "ws write 2 x",
            "ws write other x",
            "ws write * x",
            "ws exec 2 f a",
            "ws exec * f a",
            "ws close 2",
            "ws close",
            "set notify status",
            "run --to 2 a",
            "run --to other a",
            "run --to * a",
            "help",
            "ws retained",
            "ws forget other",
            "ws write --retain other x",
            "ws visibility hidden",
            "ws call 2 f",
            "ws call * f",
            "ws read 2",
            "ws write --wait 2 x",
            "ws exec --wait other f",
            "ws who *",
            "ws write --dry-run * x",
            "ws wait other --timeout 1ms",
        ];
        for door in [Door::Page(1), Door::Http { operator: false }] {
            for line in every_command {
                let (reply, sent) = from_page_rights(door, PageRights::default(), line).await;
                assert_eq!(sent, 0, "{door} {line}: {reply:?}");
                let own = matches!(line, "ws register mine" | "ws visibility hidden")
                    && door == Door::Page(1);
                assert_eq!(reply.is_ok(), own, "{door} {line}: {reply:?}");
            }
        }
        // `[pages] allow` is an explicit grant: with "ws write", a page
        // writes to every page, as the operator would.
        let grant = PageRights::new(vec!["ws write".into()]);
        let (reply, sent) = from_page_rights(Door::Page(1), grant, "ws write other x").await;
        assert!(reply.is_ok(), "{reply:?}");
        assert_eq!(sent, 1);
    }

    #[test]
    fn running_actions_never_start_with_a_digit() {
        let line = render_run(&RunningAction {
            run: 2,
            action: "build".into(),
            pid: Some(1234),
            door: Door::Page(7),
            output: Output::Page(7),
            age: Duration::from_secs(4),
        });
        assert_eq!(line, "action build run=2 pid=1234 from=page:7 to=7 age=4s");
    }

    #[test]
    fn cluster_listings_name_the_node_last_and_add_notes() {
        use crate::engine::backplane::Listed;
        use crate::engine::hub::ConnInfo;
        let info = ConnInfo {
            id: 7,
            names: vec!["status".into()],
            remote: "127.0.0.1:5000".parse().expect("address"),
            page: "/x.html".into(),
            age: Duration::from_secs(3),
            idle: Duration::from_secs(1),
            visibility: None,
            msgs_in: 1,
            bytes_in: 2,
            msgs_out: 3,
            bytes_out: 4,
        };
        let mut listing = Listing {
            conns: vec![Listed {
                info: info.clone(),
                node: None,
            }],
            notes: Vec::new(),
        };
        let alone = "7 names=status remote=127.0.0.1:5000 age=3s idle=1s visibility=- \
                     in=1msg/2B out=3msg/4B page=/x.html";
        assert_eq!(render_list(&listing), alone);
        listing.conns[0].node = Some("web1-42-abc".into());
        listing
            .notes
            .push("node web2 did not answer within 1s".into());
        assert_eq!(
            render_list(&listing),
            format!("{alone} node=web1-42-abc\nnote: node web2 did not answer within 1s")
        );
        listing.conns.clear();
        assert_eq!(
            render_list(&listing),
            "no WebSocket connections\nnote: node web2 did not answer within 1s"
        );
    }

    #[test]
    fn listings_escape_every_text_field() {
        use crate::engine::backplane::Listed;
        use crate::engine::hub::ConnInfo;
        // Names and node ids may come from another node of a cluster.
        let listing = Listing {
            conns: vec![Listed {
                info: ConnInfo {
                    id: 7,
                    names: vec!["st\u{202e}atus".into(), "x\n8 names=forged".into()],
                    remote: "127.0.0.1:5000".parse().expect("address"),
                    page: "/\u{1b}[2J".into(),
                    age: Duration::from_secs(3),
                    idle: Duration::from_secs(0),
                    visibility: Some(crate::base::command::Visibility::Hidden),
                    msgs_in: 1,
                    bytes_in: 2,
                    msgs_out: 3,
                    bytes_out: 4,
                },
                node: Some("web\r1".into()),
            }],
            notes: vec!["node \u{9b}2J did not answer".into()],
        };
        assert_eq!(
            render_list(&listing),
            "7 names=st\\u{202e}atus,x\\n8 names=forged remote=127.0.0.1:5000 age=3s idle=0s \
             visibility=hidden in=1msg/2B out=3msg/4B page=/\\u{1b}[2J node=web\\r1\n\
             note: node \\u{9b}2J did not answer"
        );
    }
}
