//! The engine: the hub, the Monitor, the backplane, the asks waiting for
//! pages' answers, the actions, what the daemon remembers and the
//! executor. It imports leaves and nothing of the doors.

pub mod actions;
pub(crate) mod asks;
pub(crate) mod backplane;
pub(crate) mod events;
pub mod exec;
pub mod hub;
pub mod monitor;
pub(crate) mod notify;
pub mod ready;
pub(crate) mod remember;

use std::sync::Arc;

use bytes::Bytes;

use crate::base::stdout::ConsoleOut;
use actions::{Actions, Joined};
use asks::Asks;
use backplane::Backplane;
use exec::{Executor, PageRights};
use hub::Hub;
use monitor::Monitor;
use ready::Readiness;
use remember::Remember;

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
    /// Retained values and resume tokens.
    pub(crate) remember: Arc<Remember>,
    /// How commands reach connections: this daemon's hub, or a cluster's.
    pub(crate) backplane: Arc<dyn Backplane>,
    /// This daemon's standard output: where a door prints what a reply has
    /// for the console ([`crate::base::door::Reply::console`]).
    pub(crate) out: ConsoleOut,
    /// What `/readyz` answers: the checks the parts added.
    pub(crate) readiness: Readiness,
}

impl Engine {
    /// The engine over `backplane` (a daemon's own hub, or a cluster's),
    /// remembering what `remember` keeps. Pages that register or come back
    /// get its retained values and the output so far of the runs they join.
    pub(crate) fn new(
        backplane: Arc<dyn Backplane>,
        page_rights: PageRights,
        actions: Actions,
        out: ConsoleOut,
        remember: Arc<Remember>,
    ) -> Arc<Engine> {
        let hub = backplane.hub().clone();
        hub.set_replay(Arc::new(Rejoin {
            remember: remember.clone(),
            actions: actions.clone(),
        }));
        let exec = Executor::new(
            backplane.clone(),
            page_rights,
            actions.clone(),
            remember.clone(),
        );
        Arc::new(Engine {
            asks: backplane.asks().clone(),
            monitor: hub.monitor().clone(),
            exec,
            backplane,
            hub,
            actions,
            out,
            remember,
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
        let remember = Arc::new(Remember::in_memory());
        Engine::new(
            backplane::Local::shared(hub),
            page_rights,
            actions,
            out,
            remember,
        )
    }
}

/// What a page gets first when it opens, comes back or registers a name:
/// the name's retained values, then the output so far of the runs it
/// joins.
struct Rejoin {
    remember: Arc<Remember>,
    actions: Actions,
}

impl hub::Replay for Rejoin {
    fn registered(&self, name: &str, out: &mut Vec<Bytes>) {
        self.remember.retained.frames_for(name, out);
        self.actions.tails_for(Joined::Registered(name), out);
    }

    fn opened(&self, id: u64, resumed: bool, out: &mut Vec<Bytes>) {
        self.actions.tails_for(Joined::Opened { id, resumed }, out);
    }

    fn for_fresh_pages(&self) -> bool {
        self.actions.has_tails_for_all()
    }
}
