//! Admission control for bursty callers (node agents renewing at once): a fixed number of calls
//! run, a bounded number wait a short while for a turn, and the rest are turned away at once
//! with a retry hint. Work is shed before it is read, so an overload costs a rejected request
//! line, not a parsed body or a growing queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Gate {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// A turn: dropping it lets the next caller in.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(in_flight: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            running: Arc::new(Semaphore::new(in_flight)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    /// A turn, or `None` when the queue is full or the wait ran out (answer 503 + Retry-After).
    pub async fn enter(&self) -> Option<Turn> {
        if let Ok(p) = Arc::clone(&self.running).try_acquire_owned() {
            return Some(Turn { _permit: p });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let permit = tokio::time::timeout(self.max_wait, Arc::clone(&self.running).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(p)) => Some(Turn { _permit: p }),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn callers_beyond_the_queue_or_the_wait_are_turned_away() {
        let gate = Arc::new(Gate::new(1, 1, Duration::from_millis(50)));
        let first = gate.enter().await.unwrap();
        // One may wait; while it waits, a third is refused at once.
        let g = Arc::clone(&gate);
        let waiter = tokio::spawn(async move { g.enter().await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(gate.enter().await.is_none());
        // The waiter's time runs out while the first still holds its turn.
        assert!(!waiter.await.unwrap());
        drop(first);
        assert!(gate.enter().await.is_some());
    }
}
