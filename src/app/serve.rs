//! `pagewire serve`: wires the hub, the doors and the background tasks
//! together, runs until a stop signal, then shuts down in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::config::{ServeConfig, Settings};
use crate::app::shutdown;
use crate::base::codec as frame;
use crate::base::command::Target;
use crate::base::stdout::ConsoleOut;
use crate::doors::console;
use crate::doors::control;
use crate::doors::http::access::{HostPolicy, OriginPolicy, Token};
use crate::doors::http::{self, Front};
use crate::doors::page::Pages;
use crate::engine::actions::Actions;
use crate::engine::backplane::{self, Backplane};
use crate::engine::exec::PageRights;
use crate::engine::hub::{CloseReason, Hub};
use crate::engine::monitor::Monitor;
use crate::engine::{notify, Engine};

/// How long shutdown waits for killed actions to report their end.
const ACTIONS_GRACE: Duration = Duration::from_secs(2);

/// How long shutdown waits for pages to receive their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGINT/SIGTERM (or the console's end).
pub(crate) async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let settings = Settings::resolve(config)?;
    // Certificate problems are reported before anything starts listening.
    let tls = match &settings.tls {
        Some((cert, key)) => Some(http::server::tls_acceptor(cert, key)?),
        None => None,
    };
    let addr = settings.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let mut control = control::bind(&settings.control)?;
    let _socket_guard = control.guard();

    let monitor = Monitor::new();
    let stop = shutdown::on_signals(monitor.clone())?;
    let out = ConsoleOut::stdout();
    let tasks = TaskTracker::new();
    // The printer starts first so that joining a cluster is on the console,
    // and outlives the stop signal, so that what shutdown reports is
    // printed too; it is stopped last.
    let printer_stop = CancellationToken::new();
    let printer = console::spawn_monitor_printer(&monitor, out.clone(), printer_stop.clone());
    if let Some(notice) = &control.notice {
        monitor.emit(notice.as_str());
    }

    let (hub, backplane) = match &settings.redis {
        None => {
            let hub = Hub::new(settings.hub, monitor.clone());
            (hub.clone(), backplane::Local::shared(hub))
        }
        Some(url) => {
            let listen = format!("http://{local}");
            let joining =
                backplane::redis::connect(url, &settings.cluster, &listen, &monitor).await?;
            let hub = Hub::with_index_source(settings.hub, monitor.clone(), joining.indexes());
            let cluster = joining.start(hub.clone(), stop.clone(), &tasks).await?;
            (hub, cluster as Arc<dyn Backplane>)
        }
    };
    let engine = Engine::new(
        backplane.clone(),
        PageRights::new(settings.page_commands.clone()),
        Actions::new(settings.actions.clone(), settings.max_running_actions),
        out.clone(),
    );
    tasks.spawn(notify::notify_pages(
        monitor.clone(),
        hub.clone(),
        engine.exec.notify_target(),
        stop.clone(),
    ));
    tasks.spawn(heartbeat(
        hub.clone(),
        settings.ping_interval,
        settings.ping_timeout,
        stop.clone(),
    ));
    if let Some(listener) = control.listener.take() {
        tasks.spawn(control::serve(listener, engine.clone(), stop.clone()));
    }

    let pages = Arc::new(Pages::new(engine.clone(), settings.conn));
    let front = Arc::new(Front {
        engine: engine.clone(),
        addresses: settings.addresses.clone(),
        origins: OriginPolicy {
            extra: settings.origins.clone(),
            hosts: HostPolicy::new(settings.addresses.mode, settings.allowed_hosts.clone()),
        },
        token: Token::new(settings.token.clone()),
        root: settings.root.clone(),
        serve_dotfiles: settings.serve_dotfiles,
        scheme: if tls.is_some() { "https" } else { "http" },
        pages: {
            let pages = pages.clone();
            Box::new(move |upgrade| pages.accept(upgrade))
        },
        server: Arc::default(),
    });
    let app = http::app(front.clone());

    out.print(format!(
        "pagewire listening on {}://{local} ({})",
        front.scheme,
        control.describe()
    ));
    let _console = console::spawn_console(engine.clone(), stop.clone());

    let server = tokio::spawn(http::server::serve(
        listener,
        app,
        tls,
        settings.server,
        front.server.clone(),
        monitor.clone(),
        stop.clone(),
    ));
    stop.cancelled().await;

    // Stop: runs are killed first, so that their pages still get the done
    // frame; then pages hear 1001 and reconnect to the next daemon.
    monitor.emit("shutting down");
    engine.actions.shutdown(ACTIONS_GRACE).await;
    backplane.leave().await;
    let _ = hub.close(
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
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
    // No flood timer fires any more: say now what floods held back.
    monitor.flush_floods();
    printer_stop.cancel();
    let _ = printer.await;
    out.flush(Duration::from_secs(1)).await;
    Ok(())
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
