//! A command that addresses connections, run on this node and asked of
//! every other live node; and the answers this node gives them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{ClusterRequest, ClusterResponse, ClusterResult, Op, WireConn, WIRE_VERSION};
use super::Node;
use crate::base::command::Target;
use crate::base::text;
use crate::engine::backplane::{memory, Delivery, Outcome, Unknown};
use crate::engine::hub::TargetError;

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

impl Gathered {
    /// Nothing gathered, for the reason `note` gives.
    fn note(note: String) -> Self {
        Gathered {
            answers: Vec::new(),
            notes: vec![note],
        }
    }
}

/// A request published to the other nodes, waiting for their replies.
pub(super) struct Sent<'a> {
    /// The request's id, which the replies carry.
    pub(super) id: u64,
    /// The replies, as they come.
    pub(super) rx: mpsc::UnboundedReceiver<ClusterResponse>,
    /// The nodes with a lease, which should answer.
    pub(super) live: Vec<String>,
    /// How many nodes heard the request besides this one.
    pub(super) hearers: usize,
    /// Keeps the request in the pending table while this lives.
    _waiting: Waiting<'a>,
}

impl Node {
    /// Runs another node's request on the local hub and publishes the
    /// answer on that node's reply channel. The requests that wait for
    /// pages answer when they have their answers (`super::verbs`).
    pub(super) async fn answer(&self, req: ClusterRequest) {
        let answer = match &req.op {
            Op::Ask {
                target,
                request,
                timeout_ms,
            } => self.ask_here(target, request, *timeout_ms, &req.from).await,
            Op::Named { name } => ClusterResult::Named {
                count: self.hub.named(name),
            },
            Op::Watch { name, timeout_ms } => {
                return self.watch_here(&req, name, *timeout_ms).await
            }
            Op::Unwatch { id } => return self.unwatch(&req.from, *id),
            Op::List | Op::Send { .. } | Op::Close { .. } => self.act(&req.op, &req.from),
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
        if let Err(e) = sent {
            self.failed(&e);
        }
    }

    pub(super) fn act(&self, op: &Op, from: &str) -> ClusterResult {
        let (what, target, done) = match op {
            Op::List => {
                let conns = self.hub.list().into_iter().map(WireConn::from).collect();
                return ClusterResult::List { conns };
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
            Op::Ask { .. } | Op::Named { .. } | Op::Watch { .. } | Op::Unwatch { .. } => {
                return ClusterResult::NoIndex
            }
        };
        match done {
            Ok(o) => {
                // Only nodes whose pages were touched say so; a request by
                // index reaches every node but concerns one.
                if o.reached + o.dropped > 0 {
                    self.monitor.emit(format_args!(
                        "cluster: {what} {target} from node {from} reached {} here",
                        o.reached
                    ));
                }
                ClusterResult::Done {
                    reached: o.reached,
                    dropped: o.dropped,
                }
            }
            Err(TargetError::NoSuchIndex(_)) => ClusterResult::NoIndex,
        }
    }

    /// Asks every other live node to run `op` and gathers their replies,
    /// waiting at most the reply timeout in all.
    pub(super) async fn fan_out(&self, op: Op) -> Gathered {
        self.fan_out_within(op, Duration::ZERO).await
    }

    /// [`Node::fan_out`], waiting `extra` longer for the replies: for
    /// requests that wait for pages themselves.
    pub(super) async fn fan_out_within(&self, op: Op, extra: Duration) -> Gathered {
        let deadline = Instant::now() + self.reply_timeout;
        match self.send_request(op, deadline).await {
            Ok(None) => Gathered::default(),
            Ok(Some(Sent {
                rx,
                live,
                hearers,
                _waiting,
                ..
            })) => {
                let waited = self.reply_timeout + extra;
                self.gather(rx, live, hearers, deadline + extra, waited)
                    .await
            }
            Err(note) => Gathered::note(note),
        }
    }

    /// Publishes `op` to every other live node, its Redis round trips
    /// bounded by `deadline`; `None` when there is no other node, the note
    /// to add when Redis failed.
    pub(super) async fn send_request(
        &self,
        op: Op,
        deadline: Instant,
    ) -> Result<Option<Sent<'_>>, String> {
        let conn = self.conn();
        let (Some(mut conn), true) = (conn, self.subscribed.load(Ordering::Acquire)) else {
            return Err(format!(
                "Redis at {} is unreachable: other nodes were not asked",
                self.server
            ));
        };
        let others = self.other_nodes(&mut conn, deadline).await?;
        if others.is_empty() {
            return Ok(None);
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Waiting::new(self, id, tx);
        let req = ClusterRequest {
            v: WIRE_VERSION,
            id,
            from: self.id.to_string(),
            op,
        };
        let Ok(payload) = serde_json::to_vec(&req) else {
            return Ok(None);
        };
        let (live, hearers) = self.publish(conn, others, payload, deadline).await?;
        Ok(Some(Sent {
            id,
            rx,
            live,
            hearers,
            _waiting: waiting,
        }))
    }

    /// The other nodes that may hold a lease.
    async fn other_nodes(
        &self,
        conn: &mut MultiplexedConnection,
        deadline: Instant,
    ) -> Result<Vec<String>, String> {
        let members = tokio::time::timeout_at(
            deadline,
            redis::cmd("SMEMBERS")
                .arg(&self.keys.nodes)
                .query_async::<Vec<String>>(conn),
        )
        .await;
        let members = self.answered(members)?;
        Ok(members.into_iter().filter(|m| **m != *self.id).collect())
    }

    /// Publishes the request while reading the leases of `others`; returns
    /// the nodes with a lease, and how many connections heard the request
    /// besides this node's own. Nodes whose lease is gone leave the set.
    async fn publish(
        &self,
        mut conn: MultiplexedConnection,
        others: Vec<String>,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<(Vec<String>, usize), String> {
        let leases: Vec<String> = others.iter().map(|n| self.keys.lease(n)).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("MGET")
            .arg(&leases)
            .cmd("PUBLISH")
            .arg(&self.keys.cluster)
            .arg(payload);
        let published = tokio::time::timeout_at(
            deadline,
            pipe.query_async::<(Vec<Option<String>>, usize)>(&mut conn),
        )
        .await;
        let (held, subscribers) = self.answered(published)?;
        let (live, dead): (Vec<_>, Vec<_>) = others
            .into_iter()
            .zip(held)
            .partition(|(_, lease)| lease.is_some());
        let live = live.into_iter().map(|(node, _)| node).collect();
        let dead: Vec<String> = dead.into_iter().map(|(node, _)| node).collect();
        if !dead.is_empty() {
            // The set is only an index of candidates; pruning it is
            // housekeeping that no command needs to wait for.
            let nodes = self.keys.nodes.clone();
            tokio::spawn(async move {
                let _ = redis::cmd("SREM")
                    .arg(nodes)
                    .arg(dead)
                    .query_async::<i64>(&mut conn)
                    .await;
            });
        }
        // PUBLISH counts the connections that heard the request, this
        // node's own among them.
        Ok((live, subscribers.saturating_sub(1)))
    }

    /// Waits for the replies of `waiting` until the deadline, or until as
    /// many as heard the request have answered: nobody else can, such as a
    /// node that crashed but whose lease has not expired yet.
    async fn gather(
        &self,
        mut rx: mpsc::UnboundedReceiver<ClusterResponse>,
        mut waiting: Vec<String>,
        hearers: usize,
        deadline: Instant,
        waited: Duration,
    ) -> Gathered {
        let mut g = Gathered::default();
        let mut heard_all = false;
        while !waiting.is_empty() {
            if g.answers.len() >= hearers {
                heard_all = true;
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => {
                    waiting.retain(|n| *n != reply.node);
                    g.answers.push(reply);
                }
                _ => break,
            }
        }
        for node in waiting {
            g.notes.push(if heard_all {
                format!("node {node} is not listening on Redis (down, or reconnecting)")
            } else {
                format!(
                    "node {node} did not answer within {}",
                    text::duration(waited)
                )
            });
        }
        g
    }

    /// What a Redis round trip of the fan-out gave: its value, or the note
    /// to add when Redis failed (the failure is also recorded) or was slow.
    pub(super) fn answered<T>(
        &self,
        r: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
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

    /// Sends or closes on the local hub, then on the other nodes unless an
    /// index was found here.
    pub(super) async fn act_everywhere(
        &self,
        target: &Target,
        local: Result<Outcome, TargetError>,
        op: Op,
    ) -> Result<Outcome, Unknown> {
        let mut out = match local {
            // Indexes are unique across the cluster: no other node has it.
            Ok(o) if matches!(target, Target::Index(_)) => return Ok(o),
            Ok(o) => Some(o),
            Err(_) => None,
        };
        let g = self.fan_out(op).await;
        let mut sum = out.take().unwrap_or_default();
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
