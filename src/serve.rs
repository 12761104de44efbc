//! `pagewire serve`: starts the daemon's parts and stops them together.
//!
//! Placeholder: this binds the HTTP address (only to report it; nothing is
//! served on it yet), the control socket, the console and the Monitor's
//! printer, then waits for a stop signal.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::console::{self, ConsoleOut};
use crate::control;
use crate::exec::Executor;
use crate::monitor::Monitor;

/// Where `pagewire serve` listens when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How long a stopping daemon waits for control connections to finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon until Ctrl-C, SIGTERM or the end of its console.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let control_path = args.control.clone().unwrap_or_else(control::default_path);
    let listener = control::bind(&control_path)?;
    let socket_guard = control::SocketGuard::new(&control_path);

    let listen = match args.listen {
        Some(addr) => addr,
        None => DEFAULT_LISTEN.parse::<SocketAddr>()?,
    };
    let http = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = http.local_addr()?;

    let shutdown = CancellationToken::new();
    let monitor = Monitor::new();
    let exec = Executor {};
    let out = ConsoleOut::stdout();

    // Signal handlers go in before the ready line: whoever waits for that
    // line may stop us right after it.
    let signals = StopSignals::install()?;
    let printer = console::spawn_monitor_printer(&monitor, out.clone(), shutdown.clone());
    let control_task = tokio::spawn(control::serve(
        listener,
        exec.clone(),
        monitor.clone(),
        shutdown.clone(),
    ));
    // The ready line: scripts and tests wait for it before talking to us.
    out.print(format!(
        "pagewire listening on http://{local} (control socket {})",
        control_path.display()
    ));
    let console_task = console::spawn_console(exec, out.clone(), shutdown.clone());

    let signal = signals.wait(&shutdown).await;
    shutdown.cancel();
    if let Some(name) = signal {
        out.print(format!("{name} received; stopping pagewire"));
    }
    if tokio::time::timeout(STOP_GRACE, control_task)
        .await
        .is_err()
    {
        tracing::warn!("control connections still busy after {STOP_GRACE:?}; stopping anyway");
    }
    let _ = printer.await;
    if let Some(task) = console_task {
        let _ = task.await;
    }
    drop(http);
    drop(socket_guard);
    out.flush(Duration::from_secs(2)).await;
    Ok(())
}

/// Ctrl-C (SIGINT) and SIGTERM, caught from the moment of installation.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Waits for a signal or `shutdown`; names the signal if one came.
    async fn wait(mut self, shutdown: &CancellationToken) -> Option<&'static str> {
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = self.interrupt.recv() => Some("interrupt"),
            _ = self.terminate.recv() => Some("SIGTERM"),
        }
    }
}
