//! A command that addresses connections: run on this node, routed to the
//! other nodes that hold a match, with a deadline; and the answers this
//! node gives to others.
//!
//! Routing is one script ([`scripts::ROUTE`]): the live nodes, and for an
//! index the node whose table or index blocks hold it, for a name the
//! nodes whose name set has it, for `*` the nodes with any page. Each
//! chosen node gets the request on its own channel, in one pipeline. A
//! request carries a deadline on Redis's clock, a little before the
//! requester stops waiting: a node that reads it later (stopped, slow, cut
//! off) drops it, so nothing is applied after the requester answered.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{ClusterRequest, ClusterResponse, ClusterResult, Op, WIRE_VERSION};
use super::{scripts, Node};
use crate::base::command::Target;
use crate::base::text;
use crate::engine::backplane::{memory, Delivery, Outcome, Unknown};
use crate::engine::hub::TargetError;

static ROUTE: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::ROUTE));

/// Removes a pending request when its requester stops waiting, however it
/// stops.
pub(super) struct Waiting<'a> {
    pub(super) node: &'a Node,
    pub(super) id: u64,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(node: &'a Node, id: u64, tx: mpsc::UnboundedSender<ClusterResponse>) -> Self {
        node.pending().insert(id, tx);
        Waiting { node, id }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.node.pending().remove(&self.id);
    }
}

#[derive(Default)]
pub(super) struct Gathered {
    pub(super) answers: Vec<ClusterResponse>,
    pub(super) notes: Vec<String>,
    /// Nodes that should have answered and did not, or could not be asked
    /// (one, when Redis failed).
    pub(super) missed: usize,
}

impl Gathered {
    /// Nothing gathered, for the reason `note` gives.
    fn failed(note: String) -> Self {
        Gathered {
            answers: Vec::new(),
            notes: vec![note],
            missed: 1,
        }
    }
}

/// Another live node, as the routing script saw it.
pub(super) struct Peer {
    pub(super) id: String,
    /// What is left of its lease, in ms.
    pub(super) ttl: i64,
    /// Whether it holds a match for the target.
    pub(super) hit: bool,
    /// Rows in its table.
    pub(super) rows: usize,
}

/// What the routing script found.
pub(super) struct Route {
    /// Redis's clock, ms.
    pub(super) now: u64,
    /// When the epoch began (Redis's clock, ms).
    pub(super) since: u64,
    pub(super) peers: Vec<Peer>,
}

/// A request published to the nodes chosen for it, waiting for their
/// replies.
pub(super) struct Sent<'a> {
    /// The request's id, which the replies carry.
    pub(super) id: u64,
    /// The replies, as they come.
    pub(super) rx: mpsc::UnboundedReceiver<ClusterResponse>,
    /// The nodes that heard it, which should answer.
    pub(super) heard: Vec<String>,
    /// The nodes that did not hear it.
    pub(super) notes: Vec<String>,
    /// Keeps the request in the pending table while this lives.
    _waiting: Waiting<'a>,
}

impl Node {
    /// Runs another node's request on the local hub and publishes the
    /// answer on that node's reply channel; drops it if its deadline has
    /// passed. The requests that wait for pages wait here no longer than
    /// the deadline, and answer when they have their answers
    /// (`super::verbs`).
    pub(super) async fn answer(&self, req: ClusterRequest) {
        let now = self.clock.now_ms();
        self.stats.lag(now.saturating_sub(req.sent));
        if now > req.deadline {
            self.stats.late();
            self.monitor.emit_summarised(
                "cluster: dropped a late request",
                format_args!(
                    "cluster: dropped a request from node {} that arrived {} after its \
                     deadline: it was not applied",
                    req.from,
                    text::duration(Duration::from_millis(now - req.deadline))
                ),
            );
            return;
        }
        let left = Duration::from_millis(req.deadline - now);
        let answer = match &req.op {
            Op::Ask {
                target,
                request,
                timeout_ms,
            } => {
                let timeout = Duration::from_millis(*timeout_ms).min(left);
                self.ask_here(target, request, timeout, &req.from).await
            }
            Op::Named { name } => ClusterResult::Named {
                count: self.hub.named(name),
            },
            Op::Watch { name, timeout_ms } => {
                let timeout = Duration::from_millis(*timeout_ms).min(left);
                return self.watch_here(&req, name, timeout).await;
            }
            Op::Unwatch { id } => return self.unwatch(&req.from, *id),
            Op::Retain { change } => self.apply_retained(change),
            Op::Send { .. } | Op::Close { .. } | Op::Tail { .. } => self.act(&req.op, &req.from),
        };
        self.reply(&req, answer).await;
    }

    /// Publishes `answer` to `req` on its requester's reply channel.
    pub(super) async fn reply(&self, req: &ClusterRequest, answer: ClusterResult) {
        let reply = ClusterResponse {
            v: WIRE_VERSION,
            id: req.id,
            node: self.id.to_string(),
            live: self.hub.len(),
            answer,
        };
        let Ok(payload) = serde_json::to_vec(&reply) else {
            return;
        };
        // Without Redis there is no way to answer; the requester reports
        // this node as not answering.
        let Some(mut conn) = self.conn() else {
            return;
        };
        let sent = redis::cmd("PUBLISH")
            .arg(self.keys.reply(&req.from))
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await;
        match sent {
            Ok(_) => self.stats.round_trip(),
            Err(e) => {
                self.stats.error();
                self.failed(&e);
            }
        }
    }

    pub(super) fn act(&self, op: &Op, from: &str) -> ClusterResult {
        let (what, target, done) = match op {
            Op::Tail { until } => {
                self.tail_until.fetch_max(*until, Ordering::Relaxed);
                return ClusterResult::Tailing;
            }
            Op::Send { target, msg } => {
                let t = Target::from(target.clone());
                let what = match msg {
                    Delivery::Write { .. } => "ws write",
                    Delivery::Exec { .. } => "ws exec",
                };
                (what, t.clone(), memory::send(&self.hub, &t, msg))
            }
            Op::Close { target } => {
                let t = Target::from(target.clone());
                ("ws close", t.clone(), memory::close(&self.hub, &t))
            }
            // Answered by `answer` itself: they wait for pages.
            Op::Ask { .. }
            | Op::Named { .. }
            | Op::Watch { .. }
            | Op::Unwatch { .. }
            | Op::Retain { .. } => return ClusterResult::NoIndex,
        };
        match done {
            Ok(o) => {
                self.monitor.emit(format_args!(
                    "cluster: {what} {target} from node {from} reached {} here",
                    o.reached
                ));
                ClusterResult::Done {
                    reached: o.reached,
                    dropped: o.dropped,
                }
            }
            Err(TargetError::NoSuchIndex(_)) => ClusterResult::NoIndex,
        }
    }

    /// The command connection if the node can talk to the cluster now, or
    /// the note saying why not.
    pub(super) fn conn_for_cluster(&self) -> Result<MultiplexedConnection, String> {
        match (self.conn(), self.subscribed.load(Ordering::Acquire)) {
            (Some(conn), true) => Ok(conn),
            _ => Err(format!(
                "Redis at {} is unreachable: other nodes were not asked",
                self.server
            )),
        }
    }

    /// Runs the routing script for `kind` (`index`, `name`, `all`, `list`)
    /// and `arg`.
    pub(super) async fn route(
        &self,
        conn: &mut MultiplexedConnection,
        kind: &str,
        arg: &str,
    ) -> Result<Route, String> {
        let sent = Instant::now();
        let got = ROUTE
            .key(&self.keys.nodes)
            .key(&self.keys.epoch)
            .arg(&self.keys.prefix)
            .arg(&*self.id)
            .arg(kind)
            .arg(arg)
            .invoke_async::<(u64, u64, Vec<(String, i64, i64, usize)>)>(conn)
            .await;
        let (now, since, peers) = self.answered(Ok(got))?;
        self.clock.set(sent, now);
        self.stats.nodes_seen(peers.len() + 1);
        Ok(Route {
            now,
            since,
            peers: peers
                .into_iter()
                .map(|(id, ttl, hit, rows)| Peer {
                    id,
                    ttl,
                    hit: hit == 1,
                    rows,
                })
                .collect(),
        })
    }

    /// The request `op` to `nodes`, sent now, acted on no later than a
    /// little before `until`: a node must act before the requester stops
    /// waiting, so that its answer can still arrive in time.
    fn encode_request(&self, id: u64, op: Op, until: Instant) -> Option<Vec<u8>> {
        let now = self.clock.now_ms();
        let left = until.saturating_duration_since(Instant::now());
        let margin = (left / 5).min(Duration::from_millis(100));
        let deadline = now + u64::try_from((left - margin).as_millis()).unwrap_or(0);
        let req = ClusterRequest {
            v: WIRE_VERSION,
            id,
            from: self.id.to_string(),
            deadline,
            sent: now,
            op,
        };
        serde_json::to_vec(&req).ok()
    }

    /// Publishes `op` to `nodes`, each on its own channel, with its
    /// deadline a little before `until`; `None` when there is nobody to
    /// send it to, the note to add when Redis failed.
    pub(super) async fn publish_request(
        &self,
        mut conn: MultiplexedConnection,
        nodes: Vec<String>,
        op: Op,
        until: Instant,
    ) -> Result<Option<Sent<'_>>, String> {
        if nodes.is_empty() {
            return Ok(None);
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Waiting::new(self, id, tx);
        let Some(payload) = self.encode_request(id, op, until) else {
            return Ok(None);
        };
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.cmd("PUBLISH").arg(self.keys.requests(n)).arg(&payload);
        }
        let heard = tokio::time::timeout_at(until, pipe.query_async::<Vec<i64>>(&mut conn)).await;
        let heard = self.answered(heard)?;
        let mut sent = Sent {
            id,
            rx,
            heard: Vec::new(),
            notes: Vec::new(),
            _waiting: waiting,
        };
        for (n, hearers) in nodes.into_iter().zip(heard) {
            if hearers > 0 {
                sent.heard.push(n);
            } else {
                sent.notes.push(format!(
                    "node {n} is not listening on Redis (down, or reconnecting): not asked"
                ));
            }
        }
        Ok(Some(sent))
    }

    /// Publishes `op` to `nodes` and waits for nothing back: for a request
    /// whose loss costs nothing (each node stops by itself at the
    /// deadline of what it cancels).
    pub(super) fn publish_quietly(&self, nodes: Vec<String>, op: Op) {
        let Some(mut conn) = self.conn() else {
            return;
        };
        let until = Instant::now() + self.reply_timeout;
        let Some(payload) = self.encode_request(0, op, until) else {
            return;
        };
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.cmd("PUBLISH").arg(self.keys.requests(n)).arg(&payload);
        }
        tokio::spawn(async move {
            let _ = tokio::time::timeout_at(until, pipe.query_async::<()>(&mut conn)).await;
        });
    }

    /// Asks `nodes` to run `op` and gathers their replies until `until`;
    /// `waited` is how long the requester waits in all, for the notes.
    pub(super) async fn request(
        &self,
        conn: MultiplexedConnection,
        nodes: Vec<String>,
        op: Op,
        until: Instant,
        waited: Duration,
    ) -> Gathered {
        match self.publish_request(conn, nodes, op, until).await {
            Ok(None) => Gathered::default(),
            Ok(Some(sent)) => {
                let mut g = Gathered {
                    answers: Vec::new(),
                    missed: sent.notes.len(),
                    notes: sent.notes,
                };
                self.gather(sent.rx, sent.heard, until, waited, &mut g)
                    .await;
                g
            }
            Err(note) => Gathered::failed(note),
        }
    }

    /// Waits for the replies of `waiting` until `until`.
    async fn gather(
        &self,
        mut rx: mpsc::UnboundedReceiver<ClusterResponse>,
        mut waiting: Vec<String>,
        until: Instant,
        waited: Duration,
        g: &mut Gathered,
    ) {
        while !waiting.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(reply)) => {
                    if let Some(at) = waiting.iter().position(|n| *n == reply.node) {
                        waiting.swap_remove(at);
                        g.answers.push(reply);
                    }
                }
                _ => break,
            }
        }
        g.missed += waiting.len();
        for node in waiting {
            g.notes.push(format!(
                "node {node} did not answer within {}: it drops the request at its deadline, \
                 so it did not apply it",
                text::duration(waited)
            ));
        }
    }

    /// What a Redis round trip gave: its value, or the note to add when
    /// Redis failed (the failure is also recorded) or was slow.
    pub(super) fn answered<T>(
        &self,
        r: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        match r {
            Ok(Ok(v)) => {
                self.stats.round_trip();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.stats.error();
                self.failed(&e);
                Err(format!(
                    "Redis at {} failed ({e}): other nodes were not asked",
                    self.server
                ))
            }
            Err(_) => Err(format!(
                "Redis at {} did not answer within {}: other nodes were not asked",
                self.server,
                text::duration(self.reply_timeout)
            )),
        }
    }

    /// Runs the routing script for `kind` and `arg` on a connection fit
    /// for the cluster, within `until`.
    pub(super) async fn route_until(
        &self,
        kind: &str,
        arg: &str,
        until: Instant,
    ) -> Result<(MultiplexedConnection, Route), String> {
        let mut conn = self.conn_for_cluster()?;
        match tokio::time::timeout_at(until, self.route(&mut conn, kind, arg)).await {
            Ok(Ok(route)) => Ok((conn, route)),
            Ok(Err(note)) => Err(note),
            Err(_) => Err(format!(
                "Redis at {} did not answer within {}: other nodes were not asked",
                self.server,
                text::duration(self.reply_timeout)
            )),
        }
    }

    /// Sends `op` to the other nodes that hold a match for `target` (by
    /// index: its owner; by name: the nodes that have it; `*`: those with
    /// a page) and gathers their replies until `until`. Also returns how
    /// many pages the nodes not asked hold: they count as live all the
    /// same ("no connection named" rather than "none").
    pub(super) async fn request_matching(
        &self,
        target: &Target,
        op: Op,
        until: Instant,
        waited: Duration,
    ) -> (Gathered, usize) {
        let (kind, arg) = match target {
            Target::Index(i) => ("index", i.to_string()),
            Target::Name(n) => ("name", n.clone()),
            Target::All => ("all", String::new()),
        };
        // Routing is bounded by the reply timeout even when the request
        // itself may wait longer for pages.
        let routing = until.min(Instant::now() + self.reply_timeout);
        match self.route_until(kind, &arg, routing).await {
            Ok((conn, route)) => {
                let mut notes = self.route_notes(&route);
                let (hit, unasked): (Vec<&Peer>, Vec<&Peer>) =
                    route.peers.iter().partition(|p| p.hit);
                let nodes = hit.iter().map(|p| p.id.clone()).collect();
                let unasked = unasked.iter().map(|p| p.rows).sum();
                let mut g = self.request(conn, nodes, op, until, waited).await;
                notes.append(&mut g.notes);
                g.notes = notes;
                (g, unasked)
            }
            Err(note) => (Gathered::failed(note), 0),
        }
    }

    /// Sends or closes on the local hub, then on the other nodes that hold
    /// a match, unless an index was found here.
    pub(super) async fn act_everywhere(
        &self,
        target: &Target,
        local: Result<Outcome, TargetError>,
        op: Op,
    ) -> Result<Outcome, Unknown> {
        let until = Instant::now() + self.reply_timeout;
        let mut sum = match local {
            // Indexes are unique across the cluster: no other node has it.
            Ok(o) if matches!(target, Target::Index(_)) => return Ok(o),
            Ok(o) => o,
            Err(_) => Outcome {
                live: self.hub.len(),
                ..Outcome::default()
            },
        };
        let (g, unasked) = self
            .request_matching(target, op, until, self.reply_timeout)
            .await;
        sum.live += unasked;
        let mut found = !matches!(target, Target::Index(_));
        for reply in g.answers {
            sum.live += reply.live;
            if let ClusterResult::Done { reached, dropped } = reply.answer {
                sum.reached += reached;
                sum.dropped += dropped;
                found = true;
            }
        }
        sum.notes = g.notes;
        match target {
            Target::Index(i) if !found => Err(Unknown {
                error: TargetError::NoSuchIndex(*i),
                notes: sum.notes,
            }),
            _ => Ok(sum),
        }
    }
}
