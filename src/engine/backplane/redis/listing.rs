//! `ws` in a cluster: this node's pages from its own hub, every other live
//! node's from its table in Redis, merged by index as they are read.
//!
//! Each table is read in pages of [`PAGE`] rows, one pipelined round trip
//! for every table whose page ran out, so the listing holds at most a page
//! per node however large the cluster is, never waits on a node (only on
//! Redis), and says which tables it could not read.

use std::collections::VecDeque;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;

use super::fanout::Route;
use super::wire::Row;
use super::Node;
use crate::base::text;
use crate::engine::backplane::Listed;
use crate::engine::hub::ConnInfo;

/// Rows read from one table per round trip.
pub(super) const PAGE: usize = 1000;

/// One other node's table, as far as it was read.
struct Source {
    node: Arc<str>,
    key: String,
    /// The index of the last row read.
    after: u64,
    rows: VecDeque<Row>,
    done: bool,
    unreadable: usize,
}

impl Node {
    /// Hands every connection of the cluster to `each`, by index; returns
    /// the notes on what is missing or may be out of date.
    pub(super) async fn list_into(&self, each: &mut (dyn FnMut(Listed) + Send)) -> Vec<String> {
        let own = self.hub.list();
        let mut notes = Vec::new();
        let route = match self.conn_for_cluster() {
            Ok(mut conn) => match self.route(&mut conn, "list", "").await {
                Ok(route) => Some((conn, route)),
                Err(note) => {
                    notes.push(note);
                    None
                }
            },
            Err(note) => {
                notes.push(note);
                None
            }
        };
        let Some((mut conn, route)) = route else {
            for info in own {
                each(self.listed(info));
            }
            return notes;
        };
        notes.extend(self.route_notes(&route));
        let mut sources: Vec<Source> = route
            .peers
            .iter()
            .map(|p| Source {
                node: p.id.as_str().into(),
                key: self.keys.conns(&p.id),
                after: 0,
                rows: VecDeque::new(),
                done: false,
                unreadable: 0,
            })
            .collect();
        let mut own = own.into_iter().peekable();
        loop {
            self.fill(&mut conn, &mut sources, &mut notes).await;
            // The source with the lowest next index, or this node's own.
            let next = sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.rows.front().map(|r| (r.id, i)))
                .min();
            match (own.peek(), next) {
                (Some(mine), Some((theirs, _))) if mine.id < theirs => {
                    let info = own.next().expect("peeked");
                    each(self.listed(info));
                }
                (_, Some((_, i))) => {
                    let s = &mut sources[i];
                    let row = s.rows.pop_front().expect("a row");
                    each(Listed {
                        info: row.info(route.now),
                        node: Some(s.node.clone()),
                    });
                }
                (Some(_), None) => {
                    let info = own.next().expect("peeked");
                    each(self.listed(info));
                }
                (None, None) => break,
            }
        }
        for s in &sources {
            if s.unreadable > 0 {
                notes.push(format!(
                    "node {}: {} rows of its table could not be read and are not shown",
                    s.node, s.unreadable
                ));
            }
        }
        notes
    }

    fn listed(&self, info: ConnInfo) -> Listed {
        Listed {
            info,
            node: Some(self.id.clone()),
        }
    }

    /// Reads the next page of every table whose rows ran out, in one
    /// pipeline. A table that cannot be read is left out and named.
    async fn fill(
        &self,
        conn: &mut MultiplexedConnection,
        sources: &mut [Source],
        notes: &mut Vec<String>,
    ) {
        let empty: Vec<usize> = (0..sources.len())
            .filter(|&i| sources[i].rows.is_empty() && !sources[i].done)
            .collect();
        if empty.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for &i in &empty {
            let s = &sources[i];
            pipe.cmd("ZRANGEBYSCORE")
                .arg(&s.key)
                .arg(format!("({}", s.after))
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE);
        }
        let pages = pipe.query_async::<Vec<Vec<Vec<u8>>>>(conn).await;
        let pages = match pages {
            Ok(pages) => {
                self.stats.round_trip();
                pages
            }
            Err(e) => {
                self.failed(&e);
                self.stats.error();
                for &i in &empty {
                    let s = &mut sources[i];
                    s.done = true;
                    notes.push(format!(
                        "node {}: its table could not be read ({e}); its connections \
                         from index {} on are missing",
                        s.node,
                        s.after + 1
                    ));
                }
                return;
            }
        };
        for (&i, page) in empty.iter().zip(pages) {
            let s = &mut sources[i];
            s.done = page.len() < PAGE;
            for member in page {
                match serde_json::from_slice::<Row>(&member) {
                    Ok(row) if row.id > s.after => {
                        s.after = row.id;
                        s.rows.push_back(row);
                    }
                    _ => s.unreadable += 1,
                }
            }
            if s.rows.is_empty() && !s.done {
                // A full page of unreadable rows: skip past them by score.
                s.done = true;
            }
        }
    }

    /// Notes on nodes that may be missing or out of date: a young epoch
    /// (Redis lost its data, nodes are announcing themselves again) and
    /// leases that were not refreshed on time.
    pub(super) fn route_notes(&self, route: &Route) -> Vec<String> {
        let mut notes = Vec::new();
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let young = route.now.saturating_sub(route.since);
        if young < lease_ms {
            notes.push(format!(
                "Redis at {} began a new epoch {} ago (restarted or restored): nodes that \
                 have not announced themselves since may be missing (for up to {} more)",
                self.server,
                text::duration(std::time::Duration::from_millis(young)),
                text::duration(std::time::Duration::from_millis(lease_ms - young)),
            ));
        }
        let refresh_ms = u64::try_from(self.refresh.as_millis()).unwrap_or(u64::MAX);
        for p in &route.peers {
            // A lease is set to a full lease at each refresh, every third
            // of it: less than a third left means a refresh is overdue.
            let left = u64::try_from(p.ttl).unwrap_or(0);
            if left + refresh_ms < lease_ms.saturating_sub(refresh_ms) {
                notes.push(format!(
                    "node {} has not refreshed its lease for {}: it may be stopped, and its \
                     connections as listed may be out of date",
                    p.id,
                    text::duration(std::time::Duration::from_millis(lease_ms - left)),
                ));
            }
        }
        notes
    }
}
