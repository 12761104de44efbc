//! `pagewire serve`: wires the hub, the doors and the background tasks
//! together, runs until a stop signal, then shuts down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::config::{ServeConfig, Settings};
use crate::app::shutdown;
use crate::app::systemd::Notifier;
use crate::base::codec as frame;
use crate::base::command::Target;
use crate::base::logline::{self, Level, LogFormat};
use crate::base::stdout::ConsoleOut;
use crate::doors::admin::Admins;
use crate::doors::console;
use crate::doors::control;
use crate::doors::http::access::{HostPolicy, OriginPolicy, Token};
use crate::doors::http::{self, Front};
use crate::doors::page::Pages;
use crate::engine::actions::Actions;
use crate::engine::backplane::redis::Cluster;
use crate::engine::backplane::{self, Backplane};
use crate::engine::exec::PageRights;
use crate::engine::hub::{CloseReason, Hub};
use crate::engine::monitor::Monitor;
use crate::engine::remember::{Remember, ALIVE_EVERY};
use crate::engine::{notify, Engine};

/// How long shutdown waits for killed actions to report their end.
const ACTIONS_GRACE: Duration = Duration::from_secs(2);

/// How long shutdown waits for pages to receive their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listen backlog asked for; the kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4). tokio's
/// `TcpListener::bind` asks for 1024, which the pages of a restarted daemon
/// overflow when thousands reconnect at once: the kernel then drops their
/// SYNs, and each waits out a retransmission (1 s, then 3 s, 7 s, ...)
/// instead of its place in the queue.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds the daemon's HTTP port as `TcpListener::bind` does (with
/// `SO_REUSEADDR`, so a restarted daemon binds while the old one's
/// connections linger in TIME_WAIT), with a longer backlog.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs the daemon until SIGINT/SIGTERM (or the console's end).
pub(crate) async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let settings = Settings::resolve(config)?;
    // Certificate problems are reported before anything starts listening.
    let tls = match &settings.tls {
        Some((cert, key)) => Some(http::server::tls_acceptor(cert, key)?),
        None => None,
    };
    let addr = settings.listen_addr()?;
    let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let mut control = control::bind(&settings.control)?;
    let _socket_guard = control.guard();

    let monitor = Monitor::new();
    let stop = shutdown::on_signals(monitor.clone())?;
    let out = ConsoleOut::stdout();
    let tasks = TaskTracker::new();
    let printer = Printer::start(&settings, &monitor, &out);
    let out = printer.console_text_in_log_format(out);
    if let Some(notice) = &control.notice {
        monitor.emit(notice.as_str());
    }

    let remember = Arc::new(Remember::open(
        settings.state_dir.as_deref(),
        &monitor,
        settings.redis.is_some(),
    ));
    let (joined, cluster) = join(&settings, &remember, &monitor, local, &stop, &tasks).await?;
    let engine = Engine::new(
        joined.clone(),
        PageRights::new(settings.page_commands.clone()),
        Actions::new(settings.actions.clone(), settings.max_running_actions),
        out.clone(),
        remember.clone(),
    );
    tasks.spawn(keep_state(remember.clone(), stop.clone()));
    let listening = engine
        .readiness
        .switch("listening", "not accepting connections");
    if let Some(cluster) = cluster {
        printer.style.node.set(cluster.node_id());
        engine.readiness.add("cluster", move || cluster.joined());
    }
    spawn_background(&tasks, &engine, &settings, control.listener.take(), &stop);
    let pages = Arc::new(Pages::new(engine.clone(), settings.conn));
    let admins = Arc::new(Admins::new(engine.clone()));
    let front = front(&settings, &engine, &pages, &admins, tls.is_some());
    listening.set(true);
    announce(&printer.style, &out, &front, local, &control.describe());
    let systemd = Notifier::from_env();
    systemd.notify("READY=1");
    systemd.watchdog(stop.clone());
    let _console = console::spawn_console(engine.clone(), stop.clone());
    let server = tokio::spawn(http::server::serve(
        listener,
        http::app(front.clone()),
        tls,
        settings.server,
        front.server.clone(),
        monitor.clone(),
        stop.clone(),
    ));
    stop.cancelled().await;
    listening.set(false);
    systemd.notify("STOPPING=1");

    // Consoles first: they hold places in the accept loop's limits, which
    // the server's drain waits for.
    admins.close_all(SHUTDOWN_GRACE).await;
    shut_down(&engine, &joined, &pages, server).await;
    remember.alive().await;
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
    printer.stop(&monitor, &out).await;
    Ok(())
}

/// What prints the Monitor on stdout. It starts first so that joining a
/// cluster is on the console, and outlives the stop signal, so that what
/// shutdown reports is printed too; it is stopped last.
struct Printer {
    style: console::LogStyle,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Printer {
    fn start(settings: &Settings, monitor: &Monitor, out: &ConsoleOut) -> Printer {
        let stop = CancellationToken::new();
        let style = console::LogStyle {
            format: settings.log_format,
            ..Default::default()
        };
        let task =
            console::spawn_monitor_printer(monitor, out.clone(), style.clone(), stop.clone());
        Printer { style, stop, task }
    }

    /// `out`, printing the console text of replies as the log format
    /// prints lines: a JSON line of event `console` when it is JSON.
    fn console_text_in_log_format(&self, out: ConsoleOut) -> ConsoleOut {
        match self.style.format {
            LogFormat::Text => out,
            LogFormat::Json => {
                let style = self.style.clone();
                out.with_console_text(move |text| log_line(&style, "console", text, &[]))
            }
        }
    }

    /// Prints what is left, then stops.
    async fn stop(self, monitor: &Monitor, out: &ConsoleOut) {
        // No flood timer fires any more: say now what floods held back.
        monitor.flush_floods();
        self.stop.cancel();
        let _ = self.task.await;
        out.flush(Duration::from_secs(1)).await;
    }
}

/// The tasks that run beside the doors until `stop`: the notify line to
/// pages, the heartbeat, and the control socket's server.
fn spawn_background(
    tasks: &TaskTracker,
    engine: &Arc<Engine>,
    settings: &Settings,
    control: Option<tokio::net::UnixListener>,
    stop: &CancellationToken,
) {
    tasks.spawn(notify::notify_pages(
        engine.monitor.clone(),
        engine.hub.clone(),
        engine.exec.notify_target(),
        stop.clone(),
    ));
    tasks.spawn(heartbeat(
        engine.hub.clone(),
        settings.ping_interval,
        settings.ping_timeout,
        stop.clone(),
    ));
    if let Some(listener) = control {
        tasks.spawn(control::serve(listener, engine.clone(), stop.clone()));
    }
}

/// Prints the ready line: the address of the pages (`/status/` under a
/// base path) and where the control socket is.
fn announce(
    style: &console::LogStyle,
    out: &ConsoleOut,
    front: &Front,
    local: SocketAddr,
    control: &str,
) {
    let url = match front.base_path.as_str() {
        "" => format!("{}://{local}", front.scheme),
        base => format!("{}://{local}{base}/", front.scheme),
    };
    out.print(log_line(
        style,
        "listening",
        &format!("pagewire listening on {url} ({control})"),
        &[("url", &url), ("control", control)],
    ));
}

/// The daemon's own message `message`, as the log format prints it.
fn log_line(
    style: &console::LogStyle,
    event: &str,
    message: &str,
    fields: &[(&str, &str)],
) -> String {
    let fields = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    logline::line(
        style.format,
        Level::Info,
        event,
        &style.node.get(),
        message,
        fields,
    )
}

/// The backplane: this daemon's hub alone, or, with `--redis`, a cluster
/// joined through Redis (its hub takes indexes from the cluster), and then
/// the cluster too. On its own, the hub takes indexes from the state
/// directory's counter when there is one, and lets the pages of the
/// previous daemon come back.
async fn join(
    settings: &Settings,
    remember: &Remember,
    monitor: &Monitor,
    local: SocketAddr,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<(Arc<dyn Backplane>, Option<Arc<Cluster>>)> {
    let Some(url) = &settings.redis else {
        let hub = match remember.counter(monitor) {
            Some(counter) => Hub::with_index_source(settings.hub, monitor.clone(), counter),
            None => Hub::new(settings.hub, monitor.clone()),
        };
        if let Some((below, left)) = remember.previous(settings.hub.resume_grace) {
            hub.set_previous(below, left);
        }
        return Ok((backplane::Local::shared(hub), None));
    };
    let listen = format!("http://{local}");
    let joining = backplane::redis::connect(url, &settings.cluster, &listen, monitor).await?;
    let hub = Hub::with_index_source(settings.hub, monitor.clone(), joining.indexes());
    let retained = Arc::new(remember.retained.clone());
    let cluster = joining.start(hub, retained, stop.clone(), tasks).await?;
    Ok((cluster.clone(), Some(cluster)))
}

/// The HTTP door, its WebSockets handed to `pages`.
fn front(
    settings: &Settings,
    engine: &Arc<Engine>,
    pages: &Arc<Pages>,
    admins: &Arc<Admins>,
    tls: bool,
) -> Arc<Front> {
    let (pages, admins) = (pages.clone(), admins.clone());
    Arc::new(Front {
        engine: engine.clone(),
        addresses: settings.addresses.clone(),
        origins: OriginPolicy {
            extra: settings.origins.clone(),
            hosts: HostPolicy::new(settings.addresses.mode, settings.allowed_hosts.clone()),
        },
        token: Token::new(settings.token.clone()),
        root: settings.root.clone(),
        serve_dotfiles: settings.serve_dotfiles,
        compression: settings.compression,
        scheme: if tls { "https" } else { "http" },
        base_path: settings.base_path.clone(),
        trusted_proxies: settings.trusted_proxies.clone(),
        pages: Box::new(move |upgrade| pages.accept(upgrade)),
        admins: Box::new(move |upgrade| admins.accept(upgrade)),
        server: Arc::default(),
        metric_names: settings.metric_names.clone(),
        admin_signing_in: Arc::new(tokio::sync::Semaphore::new(
            crate::doors::http::ADMIN_SIGNING_IN_MAX,
        )),
    })
}

/// Stops in order: runs are killed first, so that their pages still get
/// the done frame; then the cluster is left, pages hear 1001 and reconnect
/// to the next daemon, and in-flight HTTP requests finish.
async fn shut_down(
    engine: &Engine,
    joined: &Arc<dyn Backplane>,
    pages: &Pages,
    server: JoinHandle<()>,
) {
    let monitor = &engine.monitor;
    monitor.emit("shutting down");
    engine.actions.shutdown(ACTIONS_GRACE).await;
    joined.leave().await;
    let _ = engine.hub.close(
        &Target::All,
        CloseReason {
            code: frame::close_code::GOING_AWAY,
            reason: "server shutting down",
        },
    );
    pages.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, pages.tasks.wait())
        .await
        .is_err()
    {
        monitor.emit("some pages did not finish closing in time");
    }
    // In-flight HTTP requests drained meanwhile; the server bounds that
    // wait itself.
    if let Err(e) = server.await {
        monitor.emit(format_args!("HTTP server task failed: {e}"));
    }
}

/// Records that the daemon is alive, so that after a crash its pages' grace
/// period is counted from about when it died, and drops expired retained
/// values.
async fn keep_state(remember: Arc<Remember>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ALIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                remember.alive().await;
                remember.retained.purge().await;
            }
        }
    }
}

/// Pings every page on an interval and drops those silent for too long.
async fn heartbeat(hub: Hub, interval: Duration, timeout: Duration, stop: CancellationToken) {
    let ping = frame::empty_ping();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let dropped = hub.heartbeat(&ping, timeout);
                if dropped > 0 {
                    hub.monitor().emit(format_args!("heartbeat: dropped {dropped} silent connections"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// More connections than tokio's default backlog of 1024 complete
    /// their handshake while nothing accepts them: with the default, the
    /// kernel drops the SYNs past 1025 and those clients wait out a 1 s
    /// retransmission.
    #[tokio::test]
    async fn the_listen_backlog_holds_a_reconnect_storm() {
        let listener = super::listen("127.0.0.1:0".parse().expect("address"))
            .expect("listening on a free port");
        let addr = listener.local_addr().expect("local address");
        // The kernel caps the backlog at net.core.somaxconn; the test is
        // about what pagewire asks for, so it stays under that cap.
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let clients = 1500.min(somaxconn);
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..clients {
            // Under the first SYN retransmission (1 s): a dropped SYN
            // cannot make it in time.
            connects.spawn(tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            ));
        }
        let mut open = Vec::new();
        while let Some(done) = connects.join_next().await {
            if let Ok(Ok(stream)) = done.expect("connect task") {
                open.push(stream);
            }
        }
        assert_eq!(open.len(), clients, "connections through the handshake");
        drop(listener);
    }
}
