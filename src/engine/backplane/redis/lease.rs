//! The node's lease and its command connection, kept up with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio_util::sync::CancellationToken;

use super::blocks::take_indexes;
use super::wire::Keys;
use super::{Node, BACKOFF_MAX, BACKOFF_MIN, COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use crate::base::backoff::{sleep_or_stop, Backoff};

/// Keeps the lease alive and the command connection up: refreshes every
/// third of the lease, reconnects with backoff when Redis goes away.
pub(super) async fn keep_lease(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut lost = false;
    loop {
        if node.left.load(Ordering::Acquire) {
            return;
        }
        let mut conn = match node.conn() {
            Some(c) => c,
            None => match open_commands(&node.client).await {
                Ok(c) => {
                    node.set_conn(Some(c.clone()));
                    c
                }
                Err(e) => {
                    lost = true;
                    if !node.retry("reach", &e, &mut backoff, &stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        match refresh_lease(
            &mut conn,
            &node.keys,
            &node.id,
            &node.lease_value,
            node.lease,
        )
        .await
        {
            Ok(()) => {
                if lost {
                    lost = false;
                    node.monitor.emit(format_args!(
                        "cluster: Redis at {} is back; node {} rejoined",
                        node.server, node.id
                    ));
                    // Redis may have restarted empty: lift its counter above
                    // every index this node has used before any is taken.
                    let floor = node.blocks.highest();
                    if let Err(e) = take_indexes(&mut conn, &node.keys, 0, floor).await {
                        node.failed(&e);
                    }
                }
                backoff.reset();
            }
            Err(e) => {
                node.monitor.emit(format_args!(
                    "cluster: lost Redis at {}: {e}; reconnecting",
                    node.server
                ));
                lost = true;
                node.set_conn(None);
                let wait = backoff.next();
                if !sleep_or_stop(wait, &stop).await {
                    return;
                }
                continue;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.refresh) => {}
            _ = node.broken.notified() => {}
        }
    }
}

pub(super) async fn open_commands(client: &Client) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

pub(super) async fn refresh_lease(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    node: &str,
    value: &str,
    lease: Duration,
) -> Result<(), RedisError> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    redis::pipe()
        .cmd("SET")
        .arg(keys.lease(node))
        .arg(value)
        .arg("PX")
        .arg(ms)
        .ignore()
        .cmd("SADD")
        .arg(&keys.nodes)
        .arg(node)
        .ignore()
        .query_async::<()>(conn)
        .await
}
