//! The default backplane: this daemon's hub and nothing else. Every call is
//! answered from memory (those that wait for pages wait for their answers
//! or registrations); no I/O, no task, nothing outside the binary.
//!
//! The functions here are also how a cluster node acts on its own share of
//! the table, for its own commands and for those other nodes ask it to run.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    Answers, Backplane, BoxFuture, Counted, Delivery, Listed, Outcome, Unknown, OPERATOR_CLOSE,
};
use crate::base::command::Target;
use crate::engine::asks::{Asks, Request};
use crate::engine::hub::{Hub, TargetError};

/// The backplane of a daemon on its own.
#[derive(Clone)]
pub(crate) struct Local {
    hub: Hub,
    asks: Asks,
}

impl Local {
    /// A backplane over `hub` alone.
    pub(crate) fn new(hub: Hub) -> Self {
        Local {
            hub,
            asks: Asks::default(),
        }
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

    fn asks(&self) -> &Asks {
        &self.asks
    }

    fn ask<'a>(
        &'a self,
        target: &'a Target,
        request: &'a Request,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Answers, Unknown>> {
        Box::pin(async move {
            let asked = self.asks.ask(&self.hub, target, request, timeout).await?;
            Ok(Answers {
                answers: asked.answers,
                dropped: asked.dropped,
                live: self.hub.len(),
                unanswered: 0,
                notes: Vec::new(),
            })
        })
    }

    fn named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Counted> {
        Box::pin(std::future::ready(Counted {
            count: self.hub.named(name),
            notes: Vec::new(),
        }))
    }

    fn wait_named<'a>(
        &'a self,
        name: &'a str,
        count: usize,
        timeout: Duration,
    ) -> BoxFuture<'a, Counted> {
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            let count = wait_named(&self.hub, name, deadline, |n| n >= count).await;
            Counted {
                count,
                notes: Vec::new(),
            }
        })
    }
}

/// Waits until `enough(n)` holds for the `n` pages of this hub holding
/// `name`, or until `deadline`; returns the last `n`. Woken by each
/// registration (and each named page leaving), never by a timer.
pub(crate) async fn wait_named(
    hub: &Hub,
    name: &str,
    deadline: Instant,
    mut enough: impl FnMut(usize) -> bool,
) -> usize {
    loop {
        let changed = hub.names_changed();
        tokio::pin!(changed);
        // Listening before counting: a registration between the two is
        // not missed.
        changed.as_mut().enable();
        let n = hub.named(name);
        if enough(n) {
            return n;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            // The count now, not the one before the wait: what the reply
            // says must be what holds at the timeout.
            return hub.named(name);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hub::HubLimits;
    use crate::engine::monitor::Monitor;

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_name_is_woken_by_registrations_not_time() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote = "127.0.0.1:1".parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(60);
        let waiting = wait_named(&hub, "kiosk", deadline, |n| n >= 2);
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        let _one = hub.open(remote, "").expect("page 1");
        hub.register(1, "kiosk").expect("register");
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        let _two = hub.open(remote, "").expect("page 2");
        hub.register(2, "other").expect("register");
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        hub.register(2, "kiosk").expect("register");
        // The clock is paused and never advanced: only the registration
        // can have ended the wait.
        let start = Instant::now();
        assert_eq!(waiting.await, 2);
        assert_eq!(Instant::now(), start);

        let gone = wait_named(
            &hub,
            "kiosk",
            Instant::now() + Duration::from_secs(1),
            |n| n >= 3,
        );
        assert_eq!(gone.await, 2);
        assert_eq!(Instant::now(), start + Duration::from_secs(1));
    }
}
