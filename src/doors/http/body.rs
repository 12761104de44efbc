//! Request bodies with a deadline.
//!
//! hyper's header timeout ends with the request head; nothing bounds the
//! body after it. A client that announces a body and never sends it (or
//! sends a byte now and then) would keep its connection, and its place in
//! the connection limits, for as long as it likes, and enough of them lock
//! every new client out. Each body must therefore be complete within a
//! fixed time after its head arrived; the deadline does not move when
//! bytes trickle in.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// A body that was not complete in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyTimeout(pub(crate) Duration);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body not received within {}s",
            self.0.as_secs_f64()
        )
    }
}

impl StdError for BodyTimeout {}

impl BodyTimeout {
    /// The timeout behind `err`, however deeply the extractors wrapped it.
    pub(crate) fn cause_of(err: &(dyn StdError + 'static)) -> Option<BodyTimeout> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
                return Some(*timeout);
            }
            next = e.source();
        }
        None
    }
}

/// hyper's request body, failing with [`BodyTimeout`] once its deadline
/// passes. A request without a body has no deadline and no timer; a timer
/// is only set when the body is first found not ready.
pub(crate) struct DeadlineBody {
    inner: Incoming,
    /// When the body must be complete, and how long that was; None when
    /// there is no body at all.
    deadline: Option<(Instant, Duration)>,
    timer: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl DeadlineBody {
    /// Wraps `inner`, whose head arrived now; it must be complete within
    /// `timeout`.
    pub(crate) fn new(inner: Incoming, timeout: Duration) -> Self {
        let deadline = (!inner.is_end_stream()).then(|| (Instant::now() + timeout, timeout));
        DeadlineBody {
            inner,
            deadline,
            timer: None,
            expired: false,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        let Some((deadline, timeout)) = this.deadline else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired = true;
                Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_found_under_wrappers() {
        let inner: Box<dyn StdError + Send + Sync> = Box::new(BodyTimeout(Duration::from_secs(3)));
        let wrapped = axum::Error::new(inner);
        let outer = axum::Error::new(wrapped);
        assert_eq!(
            BodyTimeout::cause_of(&outer),
            Some(BodyTimeout(Duration::from_secs(3)))
        );
        assert_eq!(
            BodyTimeout(Duration::from_secs(3)).to_string(),
            "request body not received within 3s"
        );
        let other = std::io::Error::other("gone");
        assert_eq!(BodyTimeout::cause_of(&other), None);
    }
}
