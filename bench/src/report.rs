//! The record a load run prints (one JSON line) and the statistics in it.

use serde::{Deserialize, Serialize};

/// Results of one `pw-load` run. Times are milliseconds, memory KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// Which server was measured (free text from `--label`).
    pub server: String,
    /// `burst`, `sustained`, `idle`, `saturate`, `commands`, `call` or
    /// `close`.
    pub scenario: String,
    /// Clients asked for.
    pub clients: u64,
    /// Clients that connected and registered.
    pub registered: u64,
    /// Clients that failed to connect, upgrade or register.
    pub connect_failures: u64,
    /// Connect + upgrade + register of all clients, wall time.
    pub connect_ms: f64,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Broadcasts per second asked for (sustained), or found (saturate).
    pub rate: Option<f64>,
    /// Deliveries expected: broadcasts x registered clients.
    pub expected: u64,
    /// Deliveries received (each client and sequence number counted once).
    pub delivered: u64,
    /// Expected minus delivered, after the drain timeout.
    pub lost: u64,
    /// Deliveries whose text was not the text sent, or repeated.
    pub corrupt: u64,
    /// Send (or scheduled send) to the last client's receipt, per broadcast;
    /// for `call`, send to the HTTP reply, per call; for `close`, the
    /// `ws close *` to its reply.
    pub fanout_p50_ms: Option<f64>,
    /// 99th percentile of the fan-out time.
    pub fanout_p99_ms: Option<f64>,
    /// Send (or scheduled send) to receipt, per delivery.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the per-delivery latency.
    pub latency_p99_ms: Option<f64>,
    /// Largest per-delivery latency; for `close`, the `ws close *` to the
    /// last client's close frame.
    pub latency_max_ms: Option<f64>,
    /// Deliveries per second between the first send and the last receipt.
    pub msgs_per_s: Option<f64>,
    /// `POST /api/command` requests per second (commands scenario).
    pub commands_per_s: Option<f64>,
    /// Server resident memory before the clients connected.
    pub rss_before_kib: Option<u64>,
    /// Server resident memory once all clients registered.
    pub rss_after_kib: Option<u64>,
    /// (after - before) / registered, in bytes.
    pub bytes_per_conn: Option<f64>,
    /// Commands the server answered with an error or not at all.
    pub http_errors: u64,
    /// Connections the server closed during the run.
    pub closed_by_server: u64,
    /// Bytes the clients read from the wire after registering, per
    /// delivery (frame headers, compression and pings included).
    #[serde(default)]
    pub wire_bytes_per_delivery: Option<f64>,
    /// Wall time of the whole run.
    pub wall_ms: f64,
    /// CPU the server used during the run (user + system).
    pub server_cpu_ms: Option<f64>,
    /// CPU this load client used during the run.
    pub client_cpu_ms: Option<f64>,
    /// CPU the rest of the machine used during the run: other processes
    /// and kernel work not charged to either (noise when it is large).
    pub other_cpu_ms: Option<f64>,
}

impl Record {
    /// One line for people.
    pub fn human(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let mut s = format!(
            "{} {}: {}/{} clients registered in {:.0} ms",
            self.server, self.scenario, self.registered, self.clients, self.connect_ms
        );
        if self.broadcasts > 0 {
            s.push_str(&format!(
                "; {} broadcasts{}: delivered {}/{} (lost {}, corrupt {}), fan-out p50 {} p99 {} ms, latency p50 {} p99 {} max {} ms, {} msgs/s",
                self.broadcasts,
                self.rate.map_or(String::new(), |r| format!(" at {r:.1}/s")),
                self.delivered,
                self.expected,
                self.lost,
                self.corrupt,
                ms(self.fanout_p50_ms),
                ms(self.fanout_p99_ms),
                ms(self.latency_p50_ms),
                ms(self.latency_p99_ms),
                ms(self.latency_max_ms),
                self.msgs_per_s.map_or("-".to_string(), |v| format!("{v:.0}")),
            ));
        }
        if let Some(c) = self.commands_per_s {
            s.push_str(&format!("; {c:.0} commands/s"));
        }
        if let (Some(b), Some(a)) = (self.rss_before_kib, self.rss_after_kib) {
            s.push_str(&format!(
                "; server RSS {b} -> {a} KiB ({} B/conn)",
                self.bytes_per_conn
                    .map_or("-".to_string(), |v| format!("{v:.0}"))
            ));
        }
        if let (Some(srv), Some(cli), Some(other)) =
            (self.server_cpu_ms, self.client_cpu_ms, self.other_cpu_ms)
        {
            s.push_str(&format!(
                "; CPU ms server {srv:.0}, client {cli:.0}, rest of machine {other:.0}"
            ));
        }
        if self.http_errors + self.closed_by_server + self.connect_failures > 0 {
            s.push_str(&format!(
                "; errors: {} connect, {} command, {} closed by server",
                self.connect_failures, self.http_errors, self.closed_by_server
            ));
        }
        s
    }
}

/// The `p`-th percentile (0..=100) of sorted `values`, nearest-rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (sorted here), mean of the middle two when even.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
