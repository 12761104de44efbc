//! The engine: the hub, the Monitor, the backplane, the asks waiting for
//! pages' answers, the actions and the executor. It imports leaves and
//! nothing of the doors.

pub mod actions;
pub(crate) mod asks;
pub(crate) mod backplane;
pub(crate) mod events;
pub mod exec;
pub mod hub;
pub mod monitor;
pub(crate) mod notify;
pub mod ready;

use std::sync::Arc;

use crate::base::stdout::ConsoleOut;
use actions::Actions;
use asks::Asks;
use backplane::Backplane;
use exec::{Executor, PageRights};
use hub::Hub;
use monitor::Monitor;
use ready::Readiness;

/// What every door receives: the engine's parts, made once by `serve`.
/// Doors reach each part here by name, not through one another.
pub struct Engine {
    /// This daemon's connection table.
    pub(crate) hub: Hub,
    /// The event log.
    pub(crate) monitor: Monitor,
    /// The configured actions and their runs.
    pub(crate) actions: Actions,
    /// Calls, reads and confirmations waiting for pages' answers: where
    /// the page door hands the answers.
    pub(crate) asks: Asks,
    /// Runs command lines.
    pub(crate) exec: Executor,
    /// How commands reach connections: this daemon's hub, or a cluster's.
    pub(crate) backplane: Arc<dyn Backplane>,
    /// This daemon's standard output: where a door prints what a reply has
    /// for the console ([`crate::base::door::Reply::console`]).
    pub(crate) out: ConsoleOut,
    /// What `/readyz` answers: the checks the parts added.
    pub(crate) readiness: Readiness,
}

impl Engine {
    /// The engine over `backplane` (a daemon's own hub, or a cluster's).
    pub(crate) fn new(
        backplane: Arc<dyn Backplane>,
        page_rights: PageRights,
        actions: Actions,
        out: ConsoleOut,
    ) -> Arc<Engine> {
        let hub = backplane.hub().clone();
        Arc::new(Engine {
            asks: backplane.asks().clone(),
            monitor: hub.monitor().clone(),
            exec: Executor::new(backplane.clone(), page_rights, actions.clone()),
            backplane,
            hub,
            actions,
            out,
            readiness: Readiness::default(),
        })
    }

    /// The engine of a daemon on its own, over `hub`.
    pub fn local(
        hub: Hub,
        page_rights: PageRights,
        actions: Actions,
        out: ConsoleOut,
    ) -> Arc<Engine> {
        Engine::new(backplane::Local::shared(hub), page_rights, actions, out)
    }
}
