//! Asks: frames that want one answer from every page they reach (`ws
//! call`, `ws read`, and a write or exec with `--wait`), and the table of
//! those still waiting.
//!
//! An ask is encoded once, with one id, and delivered like any frame; the
//! connections it reached are noted as the frame is queued for them, before
//! any of them can be written to, so no answer can come before it is
//! expected. A page answers with a `result` or `ack` frame carrying the id
//! ([`crate::base::protocol::PageFrame`]); the page door hands it to
//! [`Asks::answer`] together with the connection it came from, and only
//! the answer of a connection the ask reached, the first one, counts: a
//! page can neither answer for another nor answer twice. The command
//! waits on one [`Notify`] until every page answered or the deadline
//! passed: no task or timer per page, whatever the number of pages.
//!
//! A page that cannot answer is not waited for: one the frame could not be
//! queued for (closed as a slow consumer by this very frame, or closing
//! already) is answered with that error at once, and one that leaves the
//! table while the ask waits (the hub wakes the asks in flight when
//! connections leave) with [`CLOSED`] as soon as it is gone. The ask
//! keeps the connections it reached, not their indexes: a page that comes
//! back to the index of one (a resume) is a new connection that was never
//! asked.
//!
//! Asks are local to a daemon; in a cluster each node asks its own pages
//! and sends the answers back (`backplane::redis`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::base::command::Target;
use crate::base::protocol::{Answer, PageAnswer, PageFrame, ServerFrame};
use crate::engine::hub::{Conn, Hub, Reach, TargetError};

/// What is asked of each target page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Request {
    /// `ws call`: call `func(arg)` and answer with its value.
    Call {
        /// The function's name.
        func: String,
        /// Its one argument.
        arg: String,
    },
    /// `ws read`: answer with the text of an element.
    Read {
        /// The element; `None` for the one the target names, or the
        /// page's first.
        name: Option<String>,
    },
    /// `ws write --wait`: show `text` and confirm it.
    Write {
        /// Plain text, never HTML.
        text: String,
    },
    /// `ws exec --wait`: call `func(arg)` (or show `func:arg`) and confirm
    /// it.
    Exec {
        /// The function's name.
        func: String,
        /// Its one argument.
        arg: String,
    },
}

impl Request {
    /// The frame for every page `target` selects, asking under `id`.
    fn encode(&self, target: &Target, id: u64) -> Bytes {
        match self {
            Request::Call { func, arg } => ServerFrame::Call {
                id,
                name: target_name(target),
                func,
                arg,
            }
            .encode(),
            // Without a name of its own, a read of a page addressed by name
            // reads that name's element.
            Request::Read { name } => ServerFrame::Read {
                id,
                name: name.as_deref().or(target_name(target)),
            }
            .encode(),
            Request::Write { text } => ServerFrame::Write {
                name: target_name(target),
                text,
                ack: Some(id),
            }
            .encode(),
            Request::Exec { func, arg } => ServerFrame::Exec {
                name: target_name(target),
                func,
                arg,
                ack: Some(id),
            }
            .encode(),
        }
    }

    /// Whether `frame` is the kind of answer this request wants.
    fn answered_by(&self, frame: &PageFrame) -> bool {
        match self {
            Request::Call { .. } | Request::Read { .. } => {
                matches!(frame, PageFrame::Result { .. })
            }
            Request::Write { .. } | Request::Exec { .. } => matches!(frame, PageFrame::Ack { .. }),
        }
    }
}

/// The element a frame names: only when the operator addressed pages by
/// name, as for every frame (`backplane::Delivery::encode`).
fn target_name(target: &Target) -> Option<&str> {
    match target {
        Target::Name(n) => Some(n),
        _ => None,
    }
}

/// What an ask gathered on this daemon.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    /// One answer per page the ask reached, by index: what it answered,
    /// or why nothing came.
    pub(crate) answers: Vec<PageAnswer>,
    /// Pages that matched but were closed as slow consumers instead.
    pub(crate) dropped: usize,
}

/// Why a page gave no answer: it did not answer in time.
pub(crate) const TIMED_OUT: &str = "timed out";
/// Why a page gave no answer: its connection ended first.
pub(crate) const CLOSED: &str = "closed before answering";
/// Why a page gave no answer: the question overflowed its queue, and it
/// was closed as a slow consumer instead.
pub(crate) const SLOW_CONSUMER: &str = "closed as a slow consumer";

/// The asks of a daemon still waiting for answers; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Asks {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, Arc<Pending>>>,
    next: AtomicU64,
}

/// One ask in flight.
struct Pending {
    request: Request,
    state: Mutex<State>,
    /// Woken when the last expected answer came.
    done: Notify,
}

#[derive(Default)]
struct State {
    /// Every connection the ask reached, and its answer once it came.
    answers: HashMap<u64, Option<Answer>>,
    /// Connections that have not answered yet.
    left: usize,
    /// The connections the question was queued for and that were in the
    /// table when last looked at.
    reached: Vec<Arc<Conn>>,
}

impl Pending {
    fn state(&self) -> MutexGuard<'_, State> {
        // Each update is a few assignments that cannot panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers [`CLOSED`] for each connection reached that has left the
    /// table without answering; returns how many answers are still to
    /// come.
    fn closed_ones(&self, hub: &Hub) -> usize {
        let mut guard = self.state();
        let state = &mut *guard;
        if state.left == 0 {
            return 0;
        }
        let (answers, left) = (&mut state.answers, &mut state.left);
        hub.keep_listed(&mut state.reached, |id| {
            if let Some(slot @ None) = answers.get_mut(&id) {
                *slot = Some(Answer::Error(CLOSED.into()));
                *left -= 1;
            }
        });
        state.left
    }
}

/// Removes an ask from the table however its command stops waiting
/// (answered, timed out, or dropped with an HTTP request that went away).
struct Registered<'a> {
    asks: &'a Asks,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.asks.pending().remove(&self.id);
    }
}

impl Asks {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Arc<Pending>>> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many asks are waiting for answers.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending().len()
    }

    /// Sends `request` to every page of `hub` that `target` selects, in
    /// one encoding, and gathers each one's answer until they all came or
    /// `timeout` passed. An index that is not live is an error.
    pub(crate) async fn ask(
        &self,
        hub: &Hub,
        target: &Target,
        request: &Request,
        timeout: Duration,
    ) -> Result<Asked, TargetError> {
        let deadline = Instant::now() + timeout;
        let id = self.shared.next.fetch_add(1, Relaxed) + 1;
        let pending = Arc::new(Pending {
            request: request.clone(),
            state: Mutex::default(),
            done: Notify::new(),
        });
        self.pending().insert(id, pending.clone());
        let _registered = Registered { asks: self, id };
        let frame = request.encode(target, id);
        // Counted before the targets are listed: a target that leaves after
        // that wakes this ask.
        let _asking = hub.asking();
        let dropped = {
            // Held while the frame is queued: an answer that comes before
            // the last page is noted waits for it here, and finds itself
            // expected.
            let mut guard = pending.state();
            let state = &mut *guard;
            let delivered = hub.deliver_with(target, &frame, |conn, reach| {
                let not_asked = match reach {
                    Reach::Queued => {
                        state.reached.push(conn.clone());
                        state.left += 1;
                        None
                    }
                    Reach::Overflowed => Some(Answer::Error(SLOW_CONSUMER.into())),
                    Reach::Closing => Some(Answer::Error(CLOSED.into())),
                };
                state.answers.insert(conn.id(), not_asked);
            })?;
            delivered.dropped
        };
        loop {
            let left = hub.conns_left();
            tokio::pin!(left);
            // Listening before looking: a page that leaves in between is
            // not missed.
            left.as_mut().enable();
            if pending.closed_ones(hub) == 0 {
                break;
            }
            // A permit is stored when the last answer comes before this
            // waits: nothing is missed between the check and the wait.
            tokio::select! {
                _ = pending.done.notified() => {}
                _ = left => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let answers = std::mem::take(&mut pending.state().answers);
        let mut answers: Vec<PageAnswer> = answers
            .into_iter()
            .map(|(index, answer)| PageAnswer {
                index,
                answer: answer.unwrap_or_else(|| {
                    let why = if hub.is_live(index) {
                        TIMED_OUT
                    } else {
                        CLOSED
                    };
                    Answer::Error(why.to_string())
                }),
            })
            .collect();
        answers.sort_by_key(|a| a.index);
        Ok(Asked { answers, dropped })
    }

    /// Records what connection `conn` answered. An answer for no ask in
    /// flight (a late one), from a connection the ask did not reach, of
    /// the wrong kind, or a second one, is ignored: the result is false.
    pub(crate) fn answer(&self, conn: u64, frame: PageFrame) -> bool {
        let id = match &frame {
            PageFrame::Result { id, .. } | PageFrame::Ack { id, .. } => *id,
            PageFrame::Other => return false,
        };
        let Some(pending) = self.pending().get(&id).cloned() else {
            return false;
        };
        if !pending.request.answered_by(&frame) {
            return false;
        }
        let answer = match frame {
            PageFrame::Result { answer, .. } => answer,
            PageFrame::Ack { error: Some(e), .. } => Answer::Error(e),
            PageFrame::Ack { error: None, .. } | PageFrame::Other => Answer::Done,
        };
        let mut state = pending.state();
        let Some(slot @ None) = state.answers.get_mut(&conn) else {
            return false;
        };
        *slot = Some(answer);
        state.left -= 1;
        if state.left == 0 {
            pending.done.notify_one();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hub::{HubLimits, Next};
    use crate::engine::monitor::Monitor;

    /// The JSON frames queued for `conn` so far.
    fn frames(conn: &crate::engine::hub::Conn) -> Vec<serde_json::Value> {
        let waker = futures_util::task::noop_waker();
        let mut out = Vec::new();
        while let Next::Frames(f) = conn.next_out(&waker) {
            for bytes in f.iter() {
                // A server text frame: two header bytes up to 125 bytes of
                // payload, four up to 64 KiB.
                let skip = if bytes[1] < 126 { 2 } else { 4 };
                out.push(serde_json::from_slice(&bytes[skip..]).expect("JSON"));
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_matched_by_id_and_connection() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote = "127.0.0.1:1".parse().expect("address");
        let one = hub.open(remote, "").expect("page 1");
        let two = hub.open(remote, "").expect("page 2");
        let three = hub.open(remote, "").expect("page 3");
        hub.register(1, "kiosk").expect("register");
        hub.register(2, "kiosk").expect("register");
        let asks = Asks::default();
        let request = Request::Call {
            func: "f".into(),
            arg: "x".into(),
        };
        let target = Target::Name("kiosk".into());
        let asking = asks.ask(&hub, &target, &request, Duration::from_secs(5));
        tokio::pin!(asking);
        assert!(futures_util::poll!(asking.as_mut()).is_pending());
        let call = frames(&one).pop().expect("a call frame");
        assert_eq!(call["type"], "call");
        assert_eq!(call["name"], "kiosk");
        assert_eq!(frames(&two).pop(), Some(call.clone()));
        assert!(frames(&three).is_empty());
        let id = call["id"].as_u64().expect("id");
        let value = |v: &str| PageFrame::Result {
            id,
            answer: Answer::Value(v.into()),
        };
        // Page 3 was not asked; an ack is not a result; a wrong id is
        // nobody's.
        assert!(!asks.answer(3, value("3")));
        assert!(!asks.answer(1, PageFrame::Ack { id, error: None }));
        assert!(!asks.answer(
            1,
            PageFrame::Result {
                id: id + 1,
                answer: Answer::Done
            }
        ));
        assert!(asks.answer(1, value("1")));
        assert!(!asks.answer(1, value("again")));
        assert!(futures_util::poll!(asking.as_mut()).is_pending());
        assert!(asks.answer(2, value("2")));
        let asked = asking.await.expect("asked");
        assert_eq!(
            asked.answers,
            [
                PageAnswer {
                    index: 1,
                    answer: Answer::Value("1".into())
                },
                PageAnswer {
                    index: 2,
                    answer: Answer::Value("2".into())
                },
            ]
        );
        assert_eq!(asks.in_flight(), 0);
        // Too late: the ask is gone.
        assert!(!asks.answer(2, value("late")));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_and_a_closed_page_says_so() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote = "127.0.0.1:1".parse().expect("address");
        let _one = hub.open(remote, "").expect("page 1");
        let _two = hub.open(remote, "").expect("page 2");
        let asks = Asks::default();
        let request = Request::Read { name: None };
        let asking = asks.ask(&hub, &Target::All, &request, Duration::from_secs(2));
        tokio::pin!(asking);
        assert!(futures_util::poll!(asking.as_mut()).is_pending());
        hub.close_one(
            2,
            crate::engine::hub::CloseReason {
                code: 1000,
                reason: "bye",
            },
        );
        let asked = asking.await.expect("asked");
        let errors: Vec<_> = asked.answers.iter().map(|a| a.answer.clone()).collect();
        assert_eq!(
            errors,
            [
                Answer::Error(TIMED_OUT.into()),
                Answer::Error(CLOSED.into())
            ]
        );
        assert_eq!(
            asks.ask(&hub, &Target::Index(9), &request, Duration::from_secs(1))
                .await,
            Err(TargetError::NoSuchIndex(9))
        );
        assert_eq!(asks.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_that_leaves_is_not_waited_for_nor_its_index_coming_back() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let remote = "127.0.0.1:1".parse().expect("address");
        let one = hub.open(remote, "").expect("page 1");
        let two = hub.open(remote, "").expect("page 2");
        let asks = Asks::default();
        let request = Request::Read { name: None };
        let asking = asks.ask(&hub, &Target::All, &request, Duration::from_secs(3600));
        tokio::pin!(asking);
        assert!(futures_util::poll!(asking.as_mut()).is_pending());
        let id = frames(&two).pop().expect("a read frame")["id"]
            .as_u64()
            .expect("id");
        // Page 1's network drops and it comes back to its index at once:
        // a new connection, never asked.
        let dropped = crate::engine::hub::CloseReason {
            code: 1006,
            reason: "dropped",
        };
        hub.gone(&one, &dropped);
        let back = hub.open_as(remote, "", Some(1), |_, _| None).expect("back");
        assert_eq!(back.id(), 1);
        assert!(futures_util::poll!(asking.as_mut()).is_pending());
        assert!(frames(&back).is_empty());
        let start = Instant::now();
        let text = PageFrame::Result {
            id,
            answer: Answer::Value("\"two\"".into()),
        };
        assert!(asks.answer(2, text));
        // The clock is paused and never advanced: nothing waited.
        let asked = asking.await.expect("asked");
        assert_eq!(Instant::now(), start);
        let answers: Vec<_> = asked.answers.iter().map(|a| a.answer.clone()).collect();
        assert_eq!(
            answers,
            [
                Answer::Error(CLOSED.into()),
                Answer::Value("\"two\"".into())
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_to_ask_answers_at_once() {
        let hub = Hub::new(HubLimits::default(), Monitor::new());
        let asks = Asks::default();
        let request = Request::Write { text: "x".into() };
        let asked = asks
            .ask(&hub, &Target::All, &request, Duration::from_secs(3600))
            .await;
        assert_eq!(asked, Ok(Asked::default()));
    }
}
