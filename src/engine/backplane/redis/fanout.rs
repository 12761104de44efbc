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

impl Node {
    /// Runs another node's request on the local hub and publishes the
    /// answer on that node's reply channel; drops it if its deadline has
    /// passed.
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
                    text::duration(std::time::Duration::from_millis(now - req.deadline))
                ),
            );
            return;
        }
        let answer = self.act(&req.op, &req.from);
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

    /// Asks `nodes` to run `op` and gathers their replies until `until`.
    pub(super) async fn ask(
        &self,
        mut conn: MultiplexedConnection,
        nodes: Vec<String>,
        op: Op,
        until: Instant,
    ) -> Gathered {
        if nodes.is_empty() {
            return Gathered::default();
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let _waiting = Waiting::new(self, id, tx);
        let now = self.clock.now_ms();
        let left = until.saturating_duration_since(Instant::now());
        // A node must act a little before the requester stops waiting, so
        // that its answer can still arrive in time.
        let margin = (left / 5).min(std::time::Duration::from_millis(100));
        let deadline = now + u64::try_from((left - margin).as_millis()).unwrap_or(0);
        let req = ClusterRequest {
            v: WIRE_VERSION,
            id,
            from: self.id.to_string(),
            deadline,
            sent: now,
            op,
        };
        let Ok(payload) = serde_json::to_vec(&req) else {
            return Gathered::default();
        };
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.cmd("PUBLISH").arg(self.keys.requests(n)).arg(&payload);
        }
        let heard = tokio::time::timeout_at(until, pipe.query_async::<Vec<i64>>(&mut conn)).await;
        let heard = match self.answered(heard) {
            Ok(heard) => heard,
            Err(note) => {
                return Gathered {
                    answers: Vec::new(),
                    notes: vec![note],
                }
            }
        };
        let mut g = Gathered::default();
        let mut waiting = Vec::new();
        for (n, hearers) in nodes.into_iter().zip(heard) {
            if hearers > 0 {
                waiting.push(n);
            } else {
                g.notes.push(format!(
                    "node {n} is not listening on Redis (down, or reconnecting): not asked"
                ));
            }
        }
        self.gather(rx, waiting, until, &mut g).await;
        g
    }

    /// Waits for the replies of `waiting` until `until`.
    async fn gather(
        &self,
        mut rx: mpsc::UnboundedReceiver<ClusterResponse>,
        mut waiting: Vec<String>,
        until: Instant,
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
        for node in waiting {
            g.notes.push(format!(
                "node {node} did not answer within {}: it drops the request at its deadline, \
                 so it did not apply it",
                text::duration(self.reply_timeout)
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
        let (kind, arg) = match target {
            Target::Index(i) => ("index", i.to_string()),
            Target::Name(n) => ("name", n.clone()),
            Target::All => ("all", String::new()),
        };
        let routed = match self.conn_for_cluster() {
            Ok(mut conn) => {
                let route = tokio::time::timeout_at(until, self.route(&mut conn, kind, &arg)).await;
                match route {
                    Ok(Ok(route)) => Ok((conn, route)),
                    Ok(Err(note)) => Err(note),
                    Err(_) => Err(format!(
                        "Redis at {} did not answer within {}: other nodes were not asked",
                        self.server,
                        text::duration(self.reply_timeout)
                    )),
                }
            }
            Err(note) => Err(note),
        };
        let g = match routed {
            Ok((conn, route)) => {
                let mut notes = self.route_notes(&route);
                // Nodes that hold no match are not asked; their pages
                // still count as live ("no connection named" vs "none").
                let nodes: Vec<String> = route
                    .peers
                    .iter()
                    .filter(|p| p.hit)
                    .map(|p| p.id.clone())
                    .collect();
                let mut g = self.ask(conn, nodes, op, until).await;
                notes.append(&mut g.notes);
                g.notes = notes;
                // Pages on nodes not asked count as live all the same.
                sum.live += route
                    .peers
                    .iter()
                    .filter(|p| !p.hit)
                    .map(|p| p.rows)
                    .sum::<usize>();
                g
            }
            Err(note) => Gathered {
                answers: Vec::new(),
                notes: vec![note],
            },
        };
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
