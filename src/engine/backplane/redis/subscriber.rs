//! The node's pub/sub connection: requests for this node, replies to its
//! own, and the cluster's Monitor lines; resubscribed with backoff when
//! lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Client;
use tokio_util::sync::CancellationToken;

use super::wire::{ClusterRequest, ClusterResponse, Keys, MonitorLine, WIRE_VERSION};
use super::Node;
use crate::base::backoff::{sleep_or_stop, Backoff};
use crate::base::text;

/// Hears requests and replies on the pub/sub connection; checks it with a
/// PING every third of the lease and resubscribes with backoff when it is
/// lost.
pub(super) async fn listen(
    node: Arc<Node>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    stop: CancellationToken,
) {
    let mut backoff = node.backoff();
    let timeout = node.refresh / 2;
    let mut check = tokio::time::interval(node.refresh);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        node.subscribed.store(true, Ordering::Release);
        let why = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) => node.on_message(&msg),
                    None => break "connection closed".to_string(),
                },
                _ = check.tick() => {
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("no answer to PING within {}", text::duration(timeout)),
                    }
                }
            }
        };
        node.subscribed.store(false, Ordering::Release);
        node.monitor.emit(format_args!(
            "cluster: lost the subscription to Redis at {}: {why}; resubscribing",
            node.server
        ));
        loop {
            match open_pubsub(&node.client, &node.keys, &node.id, timeout).await {
                Ok((s, r)) => {
                    (sink, stream) = (s, r);
                    backoff.reset();
                    node.monitor.emit(format_args!(
                        "cluster: subscribed again to Redis at {}",
                        node.server
                    ));
                    break;
                }
                Err(e) => {
                    if !node.retry("subscribe to", &e, &mut backoff, &stop).await {
                        return;
                    }
                }
            }
        }
    }
}

pub(super) async fn open_pubsub(
    client: &Client,
    keys: &Keys,
    node: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(PubSubSink, PubSubStream)> {
    let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .context("no connection within the timeout")??;
    let (mut sink, stream) = pubsub.split();
    let channels = [keys.requests(node), keys.reply(node), keys.monitor.clone()];
    tokio::time::timeout(timeout, sink.subscribe(&channels[..]))
        .await
        .context("no answer to SUBSCRIBE within the timeout")??;
    Ok((sink, stream))
}

impl Node {
    /// Handles one pub/sub message: a request from another node, or a
    /// reply to one of ours. Malformed messages are logged and dropped.
    pub(super) fn on_message(self: &Arc<Self>, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if channel == self.request_channel {
            let Some(req) = self.parse::<ClusterRequest>("request", channel, payload) else {
                return;
            };
            if req.v != WIRE_VERSION || *req.from == *self.id {
                return;
            }
            let node = self.clone();
            tokio::spawn(async move { node.answer(req).await });
        } else if channel == self.keys.monitor {
            if self.tail.receiver_count() == 0 {
                return;
            }
            let Some(m) = self.parse::<MonitorLine>("Monitor line", channel, payload) else {
                return;
            };
            if *m.node != *self.id {
                let _ = self.tail.send(super::tail::with_node(&m.node, &m.line));
            }
        } else if channel == self.reply_channel {
            let Some(reply) = self.parse::<ClusterResponse>("reply", channel, payload) else {
                return;
            };
            let waiting = self.pending().get(&reply.id).cloned();
            if let Some(tx) = waiting {
                // The requester may have stopped waiting; the reply is late.
                let _ = tx.send(reply);
            }
        }
    }

    /// A message of `kind` read from `payload`; a malformed one is logged
    /// and dropped.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        channel: &str,
        payload: &[u8],
    ) -> Option<T> {
        serde_json::from_slice(payload)
            .inspect_err(|e| {
                self.monitor.emit(format_args!(
                    "cluster: ignored a malformed {kind} on {channel}: {e}"
                ));
            })
            .ok()
    }

    /// Says in the Monitor that this node cannot `what` Redis (`e`), waits
    /// the next backoff, and returns false if the daemon stops meanwhile.
    pub(super) async fn retry(
        &self,
        what: &str,
        e: &(dyn std::fmt::Display + Sync),
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> bool {
        let wait = backoff.next();
        self.monitor.emit(format_args!(
            "cluster: cannot {what} Redis at {}: {e}; retrying in {}",
            self.server,
            text::duration(wait)
        ));
        sleep_or_stop(wait, stop).await
    }
}
