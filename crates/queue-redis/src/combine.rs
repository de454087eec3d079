//! Group commit for script calls: requests that arrive while a call is on its way are sent
//! together in the next call.
//!
//! A caller pushes its request and gets a receiver for its answer. If fewer than
//! `max_in_flight` flushes run, the caller also gets a [`Lead`]: it takes up to `max_batch`
//! waiting requests (its own among them), sends them in one call and answers each. Requests that
//! arrive meanwhile wait for the next flush. An idle process thus sends each request at once,
//! and a busy one sends a few calls for many requests. With two flushes in flight, Redis runs one
//! call while this process handles the answer of the other.

use std::sync::{Mutex, MutexGuard, PoisonError};

use queue_core::{QueueError, QueueResult};
use tokio::sync::oneshot;

/// A request and where its answer goes.
pub(crate) type Waiter<T, R> = (T, oneshot::Sender<R>);

/// Requests waiting for a call, and how many flushes run.
pub(crate) struct Combiner<T, R> {
    state: Mutex<State<T, R>>,
    max_batch: usize,
    max_in_flight: usize,
}

struct State<T, R> {
    waiting: Vec<Waiter<T, R>>,
    flushing: usize,
}

impl<T, R> Combiner<T, R> {
    /// A combiner sending at most `max_batch` requests per call, with at most `max_in_flight`
    /// calls at once (both at least 1).
    pub(crate) fn new(max_batch: usize, max_in_flight: usize) -> Self {
        Self {
            state: Mutex::new(State { waiting: Vec::new(), flushing: 0 }),
            max_batch: max_batch.max(1),
            max_in_flight: max_in_flight.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request`. Returns the receiver of its answer and, when a flush place is free, the
    /// lead of a new flush: the caller must then send batches ([`Combiner::take`]) until
    /// [`Combiner::more`] says nothing waits.
    pub(crate) fn push(&self, request: T) -> (oneshot::Receiver<R>, Option<Lead<'_, T, R>>) {
        let (reply, answer) = oneshot::channel();
        let mut s = self.lock();
        s.waiting.push((request, reply));
        let lead = s.flushing < self.max_in_flight;
        s.flushing += usize::from(lead);
        // `then`, not `then_some`: a lead built and dropped here would give back a place it never
        // took, under the lock this function still holds.
        (answer, lead.then(|| Lead { combiner: self, held: true }))
    }

    /// Up to `max_batch` waiting requests, oldest first (empty when another flush took them).
    pub(crate) fn take(&self, _lead: &Lead<'_, T, R>) -> Vec<Waiter<T, R>> {
        let mut s = self.lock();
        let n = s.waiting.len().min(self.max_batch);
        s.waiting.drain(..n).collect()
    }

    /// Whether requests still wait. When none do, the lead is given back under the same lock
    /// that saw the list empty, so a request pushed after it finds a free place and leads.
    pub(crate) fn more(&self, lead: &mut Lead<'_, T, R>) -> bool {
        let mut s = self.lock();
        if s.waiting.is_empty() {
            s.flushing -= 1;
            lead.held = false;
            false
        } else {
            true
        }
    }

    /// Takes over a lead that was [`Lead::hand_over`]ed (to a spawned task).
    pub(crate) const fn adopt(&self) -> Lead<'_, T, R> {
        Lead { combiner: self, held: true }
    }

    /// Flushes running (tests).
    #[cfg(test)]
    fn flushing(&self) -> usize {
        self.lock().flushing
    }
}

/// Answers each of `replies` with its own result, in order, or every one with the call's error
/// (also when the call answered a different number of requests than it was sent).
pub(crate) fn answer_each<R>(
    replies: Vec<oneshot::Sender<QueueResult<R>>>,
    results: QueueResult<Vec<QueueResult<R>>>,
) {
    let results = results.and_then(|results| {
        if results.len() == replies.len() {
            Ok(results)
        } else {
            Err(QueueError::Storage(format!(
                "a batched call answered {} requests for {}",
                results.len(),
                replies.len()
            )))
        }
    });
    match results {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The right to run one flush. Dropped while held (its task aborted mid-flush), it gives its
/// place back, so that later requests still find a flush to lead.
pub(crate) struct Lead<'a, T, R> {
    combiner: &'a Combiner<T, R>,
    held: bool,
}

impl<T, R> Lead<'_, T, R> {
    /// Gives the lead up without freeing its place: the new holder calls [`Combiner::adopt`].
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl<T, R> Drop for Lead<'_, T, R> {
    fn drop(&mut self) {
        if self.held {
            self.combiner.lock().flushing -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_callers_lead_up_to_the_limit_and_the_rest_wait() {
        let c: Combiner<u32, u32> = Combiner::new(2, 2);
        let (_a, lead_a) = c.push(1);
        let (_b, lead_b) = c.push(2);
        let (_c, lead_c) = c.push(3);
        assert!(lead_a.is_some() && lead_b.is_some(), "two flushes may run");
        assert!(lead_c.is_none(), "a third request waits for a running flush");
        let mut lead_a = lead_a.unwrap();
        let batch: Vec<u32> = c.take(&lead_a).into_iter().map(|(r, _)| r).collect();
        assert_eq!(batch, [1, 2], "a batch takes the oldest, at most max_batch");
        assert!(c.more(&mut lead_a), "request 3 still waits");
        let batch: Vec<u32> = c.take(&lead_a).into_iter().map(|(r, _)| r).collect();
        assert_eq!(batch, [3]);
        assert!(!c.more(&mut lead_a));
        assert_eq!(c.flushing(), 1, "lead a gave its place back");
        drop(lead_a);
        assert_eq!(c.flushing(), 1, "a lead given back is not given back twice");
    }

    #[test]
    fn each_request_gets_its_own_answer_or_all_get_the_error() {
        let (tx1, mut rx1) = oneshot::channel::<QueueResult<u32>>();
        let (tx2, mut rx2) = oneshot::channel::<QueueResult<u32>>();
        answer_each(vec![tx1, tx2], Ok(vec![Ok(1), Err(QueueError::NotRunning)]));
        assert_eq!(rx1.try_recv().unwrap(), Ok(1));
        assert_eq!(rx2.try_recv().unwrap(), Err(QueueError::NotRunning));

        let (tx1, mut rx1) = oneshot::channel::<QueueResult<u32>>();
        let (tx2, mut rx2) = oneshot::channel::<QueueResult<u32>>();
        answer_each(vec![tx1, tx2], Ok(vec![Ok(1)]));
        assert!(
            matches!(rx1.try_recv().unwrap(), Err(QueueError::Storage(m)) if m.contains("1 requests for 2"))
        );
        assert!(
            matches!(rx2.try_recv().unwrap(), Err(QueueError::Storage(_))),
            "a short answer fails every request"
        );
    }

    #[test]
    fn a_lead_dropped_mid_flush_gives_its_place_back() {
        let c: Combiner<u32, u32> = Combiner::new(8, 1);
        let (_a, lead) = c.push(1);
        drop(lead);
        assert_eq!(c.flushing(), 0);
        let (_b, lead) = c.push(2);
        assert!(lead.is_some(), "the next request leads");
    }

    #[test]
    fn a_lead_handed_over_keeps_its_place_until_adopted_and_given_back() {
        let c: Combiner<u32, u32> = Combiner::new(8, 1);
        let (_a, lead) = c.push(1);
        lead.unwrap().hand_over();
        assert_eq!(c.flushing(), 1, "the place stays taken while the lead changes hands");
        let (_b, none) = c.push(2);
        assert!(none.is_none());
        let mut adopted = c.adopt();
        assert_eq!(c.take(&adopted).len(), 2);
        assert!(!c.more(&mut adopted));
        assert_eq!(c.flushing(), 0);
    }
}
