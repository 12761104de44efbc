//! The verbs that wait for pages, across the cluster: `ws call`, `ws read`
//! and `--wait` (an `Ask`: each node asks its own pages and answers with
//! what they said), `/probe` (`Named`: each node's count) and `ws wait`
//! (`Watch`: each node answers its count at once and again at every
//! change, until the requester has enough and says `Unwatch`).
//!
//! The shape every such request has, and what another backplane needs to
//! give for it: send a request to the pages a TARGET matches on every
//! node, and gather one answer per page (or per node) until a deadline.
//! Here they are routed as every request is ([`super::fanout`]): an ask
//! and a count go only to the nodes that hold a match, a watch to every
//! live node (a page may register anywhere); each carries a deadline (an
//! ask's is its own timeout plus the reply timeout), after which a node
//! neither asks its pages nor reports. One `PUBLISH` per node out and one
//! reply per node (per change, for a watch) back; nothing per page crosses
//! Redis but the answers.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fanout::Sent;
use super::wire::{ClusterRequest, ClusterResponse, ClusterResult, Op, WireTarget};
use super::Node;
use crate::base::command::{Target, MAX_TIMEOUT};
use crate::base::text;
use crate::engine::asks::Request;
use crate::engine::backplane::{memory, Answers, Counted, Unknown};
use crate::engine::hub::TargetError;

/// A duration as the wire carries it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Node {
    /// Asks the pages `target` selects here and on the other nodes that
    /// hold a match, at once, and merges the answers. An index held here is
    /// asked here only.
    pub(super) async fn ask_everywhere(
        &self,
        target: &Target,
        request: &Request,
        timeout: Duration,
    ) -> Result<Answers, Unknown> {
        let local = self.asks.ask(&self.hub, target, request, timeout);
        if matches!(target, Target::Index(i) if self.hub.is_live(*i)) {
            let asked = local.await?;
            return Ok(Answers {
                answers: asked.answers,
                dropped: asked.dropped,
                live: self.hub.len(),
                unanswered: 0,
                notes: Vec::new(),
            });
        }
        let op = Op::Ask {
            target: target.into(),
            request: request.clone(),
            timeout_ms: millis(timeout),
        };
        // The other nodes wait `timeout` for their pages, then answer.
        let waited = timeout + self.reply_timeout;
        let until = Instant::now() + waited;
        let (local, (g, unasked)) =
            tokio::join!(local, self.request_matching(target, op, until, waited));
        let mut found = !matches!(target, Target::Index(_));
        let mut all = Answers {
            live: self.hub.len() + unasked,
            unanswered: g.missed,
            notes: g.notes,
            ..Answers::default()
        };
        if let Ok(asked) = local {
            found = true;
            all.answers = asked.answers;
            all.dropped = asked.dropped;
        }
        for reply in g.answers {
            all.live += reply.live;
            if let ClusterResult::Asked { answers, dropped } = reply.answer {
                found = true;
                all.answers.extend(answers);
                all.dropped += dropped;
            }
        }
        all.answers.sort_by_key(|a| a.index);
        match target {
            Target::Index(i) if !found => Err(Unknown {
                error: TargetError::NoSuchIndex(*i),
                notes: all.notes,
            }),
            _ => Ok(all),
        }
    }

    /// How many pages hold `name` here and on the other nodes whose pages
    /// registered it.
    pub(super) async fn named_everywhere(&self, name: &str) -> Counted {
        let here = self.hub.named(name);
        let op = Op::Named { name: name.into() };
        let until = Instant::now() + self.reply_timeout;
        let target = Target::Name(name.into());
        let (g, _) = self
            .request_matching(&target, op, until, self.reply_timeout)
            .await;
        let mut count = here;
        for reply in g.answers {
            if let ClusterResult::Named { count: theirs } = reply.answer {
                count += theirs;
            }
        }
        Counted {
            count,
            notes: g.notes,
        }
    }

    /// Waits until at least `count` pages hold `name` across the cluster,
    /// or `timeout`: woken by registrations here and by the other nodes'
    /// reports of theirs.
    pub(super) async fn wait_everywhere(
        &self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Counted {
        let deadline = Instant::now() + timeout;
        let enough = |n: usize| n >= count;
        let here = self.hub.named(name);
        if enough(here) {
            return Counted {
                count: here,
                notes: Vec::new(),
            };
        }
        let (sent, mut notes) = match self.send_watch(name, timeout, deadline).await {
            Ok((Some(sent), notes)) => (sent, notes),
            // Alone, or Redis is away: this node's pages are all there is
            // to wait for.
            other => {
                let notes = match other {
                    Ok((_, notes)) => notes,
                    Err(note) => vec![note],
                };
                let n = memory::wait_named(&self.hub, name, deadline, enough).await;
                return Counted { count: n, notes };
            }
        };
        let Sent {
            id,
            mut rx,
            heard,
            notes: not_heard,
            ..
        } = sent;
        notes.extend(not_heard);
        let (total, theirs) = self.count_until(name, &mut rx, deadline, enough).await;
        notes.extend(
            heard
                .iter()
                .filter(|node| !theirs.contains_key(*node))
                .map(|node| {
                    format!(
                        "node {node} did not answer within {}",
                        text::duration(timeout)
                    )
                }),
        );
        // The others stop watching now rather than at the deadline; best
        // effort, as they stop then anyway.
        self.publish_quietly(heard, Op::Unwatch { id });
        Counted {
            count: total,
            notes,
        }
    }

    /// Asks every live node (a page may register on any of them) to watch
    /// `name` until `deadline`; `None` when there is no other node, with
    /// notes on the route, or the note saying why no node was asked.
    async fn send_watch(
        &self,
        name: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(Option<Sent<'_>>, Vec<String>), String> {
        let op = Op::Watch {
            name: name.into(),
            timeout_ms: millis(timeout),
        };
        let routing = deadline.min(Instant::now() + self.reply_timeout);
        let (conn, route) = self.route_until("list", "", routing).await?;
        let notes = self.route_notes(&route);
        let nodes = route.peers.into_iter().map(|p| p.id).collect();
        let sent = self.publish_request(conn, nodes, op, deadline).await?;
        Ok((sent, notes))
    }

    /// Counts the pages holding `name` here and, as their reports come on
    /// `rx`, on the other nodes, until the total is `enough` or `deadline`:
    /// the total then, and each node's last report.
    async fn count_until(
        &self,
        name: &str,
        rx: &mut mpsc::UnboundedReceiver<ClusterResponse>,
        deadline: Instant,
        enough: impl Fn(usize) -> bool,
    ) -> (usize, HashMap<String, usize>) {
        let mut theirs: HashMap<String, usize> = HashMap::new();
        let total = loop {
            let changed = self.hub.names_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let total = self.hub.named(name) + theirs.values().sum::<usize>();
            if enough(total) {
                break total;
            }
            tokio::select! {
                _ = changed => {}
                reply = rx.recv() => {
                    if let Some(reply) = reply {
                        if let ClusterResult::Named { count } = reply.answer {
                            theirs.insert(reply.node, count);
                        }
                    }
                }
                // Counted again: the reply says what holds at the deadline.
                _ = tokio::time::sleep_until(deadline) => {
                    break self.hub.named(name) + theirs.values().sum::<usize>()
                }
            }
        };
        (total, theirs)
    }

    /// Another node's `Ask`: asks this node's pages, for at most
    /// `timeout` (what is left before the request's deadline, and never
    /// more than a command may wait).
    pub(super) async fn ask_here(
        &self,
        target: &WireTarget,
        request: &Request,
        timeout: Duration,
        from: &str,
    ) -> ClusterResult {
        let target = Target::from(target.clone());
        let timeout = timeout.min(MAX_TIMEOUT);
        match self.asks.ask(&self.hub, &target, request, timeout).await {
            Ok(asked) => {
                if !asked.answers.is_empty() {
                    self.monitor.emit(format_args!(
                        "cluster: ask {target} from node {from}: {} answered here",
                        asked.answers.iter().filter(|a| a.is_ok()).count()
                    ));
                }
                ClusterResult::Asked {
                    answers: asked.answers,
                    dropped: asked.dropped,
                }
            }
            Err(TargetError::NoSuchIndex(_)) => ClusterResult::NoIndex,
        }
    }

    /// Another node's `Watch`: answers this node's count for `name` now and
    /// at every change, for `timeout` (up to the request's deadline) or
    /// until its `Unwatch`.
    pub(super) async fn watch_here(&self, req: &ClusterRequest, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout.min(MAX_TIMEOUT);
        let stop = CancellationToken::new();
        let key = (req.from.clone(), req.id);
        self.watches().insert(key.clone(), stop.clone());
        let mut told = None;
        loop {
            let changed = self.hub.names_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let count = self.hub.named(name);
            if told != Some(count) {
                self.reply(req, ClusterResult::Named { count }).await;
                told = Some(count);
            }
            tokio::select! {
                _ = changed => {}
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.watches().remove(&key);
    }

    /// Another node's `Unwatch`: its watch `id` ends.
    pub(super) fn unwatch(&self, from: &str, id: u64) {
        if let Some(stop) = self.watches().remove(&(from.to_string(), id)) {
            stop.cancel();
        }
    }
}
