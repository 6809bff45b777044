/*!
Work in flight, counted so that a graceful shutdown can wait for it: the
blueprint writes that run on tasks of their own, and the socket layer's
virtual requests.
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A count of work in flight, and whether the process is shutting down.
/// Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Inflight(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    closing: AtomicBool,
    idle: Notify,
}

/// One piece of work counted by an [`Inflight`] until this is dropped.
#[derive(Debug)]
#[must_use = "the work is counted only while the guard lives"]
pub struct InflightGuard(Arc<Inner>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Inflight {
    /// A new, empty count.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one piece of work until the guard drops.
    pub fn enter(&self) -> InflightGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.0.clone())
    }

    /// How much work is in flight.
    pub fn len(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Whether no work is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the process as shutting down: new work that may be refused
    /// (a socket's next request) is refused from now on.
    pub fn close(&self) {
        self.0.closing.store(true, Ordering::Release);
    }

    /// Whether [`Inflight::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Acquire)
    }

    /// Waits until no work is in flight; false when `deadline` passed
    /// first.
    pub async fn idle(&self, deadline: Duration) -> bool {
        let drained = async {
            loop {
                let notified = self.0.idle.notified();
                let mut notified = std::pin::pin!(notified);
                // Registered before the check, so a guard dropped between
                // the check and the wait still wakes it.
                notified.as_mut().enable();
                if self.is_empty() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, drained).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let inflight = Inflight::new();
        assert!(
            inflight.idle(Duration::from_millis(1)).await,
            "empty is idle"
        );
        let a = inflight.enter();
        let b = inflight.enter();
        assert!(!inflight.idle(Duration::from_millis(20)).await);
        drop(a);
        let waiter = tokio::spawn({
            let inflight = inflight.clone();
            async move { inflight.idle(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one guard is still alive");
        drop(b);
        assert!(waiter.await.unwrap());
        assert!(!inflight.is_closing());
        inflight.close();
        assert!(inflight.clone().is_closing(), "clones share the state");
    }
}
