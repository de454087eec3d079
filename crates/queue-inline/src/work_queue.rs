//! A bounded multi-consumer work queue for worker pools: push refuses when full (never blocks a
//! submitter), pop waits without polling.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// A bounded FIFO shared by one pool of workers.
#[derive(Debug)]
pub(crate) struct WorkQueue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: Notify,
}

impl<T> WorkQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { items: Mutex::new(VecDeque::new()), capacity: capacity.max(1), ready: Notify::new() }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // A panic while holding this lock cannot leave the deque half-updated, so a poisoned
        // lock is still consistent.
        self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `item`, or gives it back when the queue is full.
    pub(crate) fn try_push(&self, item: T) -> Result<(), T> {
        {
            let mut items = self.lock();
            if items.len() >= self.capacity {
                return Err(item);
            }
            items.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Appends `item` whatever the length (for work the runtime itself owes: a lane's next job).
    pub(crate) fn push_owed(&self, item: T) {
        self.lock().push_back(item);
        self.ready.notify_one();
    }

    /// Takes up to `max` items, waiting until at least one is there.
    pub(crate) async fn pop_batch(&self, max: usize) -> Vec<T> {
        loop {
            // Register interest before looking, so a push between the look and the wait is not
            // missed.
            let notified = self.ready.notified();
            {
                let mut items = self.lock();
                if !items.is_empty() {
                    let n = max.max(1).min(items.len());
                    let batch: Vec<T> = items.drain(..n).collect();
                    if !items.is_empty() {
                        // Others may be waiting: pass the wake-up on.
                        self.ready.notify_one();
                    }
                    return batch;
                }
            }
            notified.await;
        }
    }

    /// Takes one item, waiting until there is one.
    pub(crate) async fn pop(&self) -> T {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.try_pop() {
                return item;
            }
            notified.await;
        }
    }

    /// Takes one item if there is one, without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut items = self.lock();
        let item = items.pop_front()?;
        if !items.is_empty() {
            drop(items);
            // Others may be waiting: pass the wake-up on.
            self.ready.notify_one();
        }
        Some(item)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Empties the queue, returning what it held.
    pub(crate) fn drain(&self) -> Vec<T> {
        self.lock().drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_full_queue_gives_the_item_back() {
        let q = WorkQueue::new(2);
        q.try_push(1).unwrap();
        q.try_push(2).unwrap();
        assert_eq!(q.try_push(3), Err(3));
        q.push_owed(4);
        assert_eq!(q.len(), 3);
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.drain(), vec![2, 4]);
        assert_eq!(q.try_pop(), None);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_and_keeps_fifo_order() {
        let q = Arc::new(WorkQueue::new(10));
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { (q.pop().await, q.pop().await) }
        });
        q.try_push("a").unwrap();
        q.try_push("b").unwrap();
        assert_eq!(consumer.await.unwrap(), ("a", "b"));
    }

    #[tokio::test]
    async fn pop_batch_takes_at_most_max() {
        let q = WorkQueue::new(10);
        for i in 0..5 {
            q.try_push(i).unwrap();
        }
        assert_eq!(q.pop_batch(3).await, vec![0, 1, 2]);
        assert_eq!(q.pop_batch(3).await, vec![3, 4]);
    }
}
