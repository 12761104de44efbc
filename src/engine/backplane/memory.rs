//! The default backplane: this daemon's hub and nothing else. Every call is
//! answered at once from memory; no I/O, no task, nothing outside the
//! binary.
//!
//! The functions here are also how a cluster node acts on its own share of
//! the table, for its own commands and for those other nodes ask it to run.

use std::sync::Arc;

use super::{Backplane, BoxFuture, Delivery, Listed, Outcome, Unknown, OPERATOR_CLOSE};
use crate::base::command::Target;
use crate::engine::hub::{Hub, TargetError};

/// The backplane of a daemon on its own.
#[derive(Clone, Debug)]
pub(crate) struct Local {
    hub: Hub,
}

impl Local {
    /// A backplane over `hub` alone.
    pub(crate) fn new(hub: Hub) -> Self {
        Local { hub }
    }

    /// The same, ready for [`crate::engine::exec::Executor`].
    pub(crate) fn shared(hub: Hub) -> Arc<dyn Backplane> {
        Arc::new(Local::new(hub))
    }
}

impl Backplane for Local {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn list<'a>(&'a self, each: &'a mut (dyn FnMut(Listed) + Send)) -> BoxFuture<'a, Vec<String>> {
        for listed in list(&self.hub, None) {
            each(listed);
        }
        Box::pin(std::future::ready(Vec::new()))
    }

    fn send<'a>(
        &'a self,
        target: &'a Target,
        msg: &'a Delivery,
    ) -> BoxFuture<'a, Result<Outcome, Unknown>> {
        let done = send(&self.hub, target, msg).map_err(Unknown::from);
        Box::pin(std::future::ready(done))
    }

    fn close<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, Unknown>> {
        let done = close(&self.hub, target).map_err(Unknown::from);
        Box::pin(std::future::ready(done))
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// This hub's connections, each marked with `node`.
pub(crate) fn list(hub: &Hub, node: Option<&Arc<str>>) -> Vec<Listed> {
    hub.list()
        .into_iter()
        .map(|info| Listed {
            info,
            node: node.cloned(),
        })
        .collect()
}

/// Encodes `msg` once and queues it for this hub's connections.
pub(crate) fn send(hub: &Hub, target: &Target, msg: &Delivery) -> Result<Outcome, TargetError> {
    let d = hub.deliver(target, &msg.encode(target))?;
    Ok(Outcome {
        reached: d.reached,
        dropped: d.dropped,
        live: hub.len(),
        notes: Vec::new(),
    })
}

/// Closes this hub's connections that `target` selects.
pub(crate) fn close(hub: &Hub, target: &Target) -> Result<Outcome, TargetError> {
    let n = hub.close(target, OPERATOR_CLOSE)?;
    Ok(Outcome {
        reached: n,
        dropped: 0,
        live: hub.len(),
        notes: Vec::new(),
    })
}
