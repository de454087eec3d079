//! The SQLite writer's queue of operations: callers push one at a time, the writer takes all that
//! wait at once.
//!
//! It replaced a `std::sync::mpsc` channel, whose send allocated (and zeroed) a block of 31
//! slots for every 31 operations and whose receiver took one operation per call: in the SQLite
//! W2 drain, about 870 instructions per job on the callers' side and 450 on the writer's. Here a
//! push is a lock, a `push_back` and, only when the writer sleeps, a wake-up; the writer swaps
//! the whole queue out under the lock, and the two buffers are reused. They keep the capacity of
//! the longest queue seen, which is at most one operation per caller waiting at the same time
//! (each caller waits for its answer before it sends again), 160 bytes each.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// One taker (the writer), any number of pushers.
#[derive(Debug)]
pub(super) struct OpQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// The taker is blocked in [`OpQueue::take_blocking`]: the next push wakes it.
    waiting: bool,
    /// Nothing more will be pushed ([`OpQueue::close`]): the taker gets what waits, then stops.
    closed: bool,
    /// The taker has stopped ([`OpQueue::stop_taking`]): pushes are refused.
    gone: bool,
}

/// The taker has stopped: the item pushed is handed back.
#[derive(Debug)]
pub(super) struct Gone<T>(pub T);

impl<T> OpQueue<T> {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State { items: VecDeque::new(), waiting: false, closed: false, gone: false }),
            ready: Condvar::new(),
        }
    }

    /// Nothing here panics while holding the lock, and the state stays whole if a caller does.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `item` to the taker.
    ///
    /// # Errors
    /// [`Gone`] with the item when the taker has stopped.
    pub(super) fn push(&self, item: T) -> Result<(), Gone<T>> {
        let mut state = self.lock();
        if state.gone {
            return Err(Gone(item));
        }
        state.items.push_back(item);
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Nothing more will be pushed: the taker takes what waits, and then
    /// [`OpQueue::take_blocking`] answers `false`.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Waits until something is pushed and moves all that waits to the back of `into`; `false`
    /// (and nothing moved) once the queue is closed and empty.
    pub(super) fn take_blocking(&self, into: &mut VecDeque<T>) -> bool {
        let mut state = self.lock();
        while state.items.is_empty() {
            if state.closed {
                return false;
            }
            state.waiting = true;
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.waiting = false;
        Self::move_all(&mut state.items, into);
        true
    }

    /// Moves all that waits to the back of `into` without waiting; `false` if nothing does.
    pub(super) fn take_waiting(&self, into: &mut VecDeque<T>) -> bool {
        let mut state = self.lock();
        if state.items.is_empty() {
            return false;
        }
        Self::move_all(&mut state.items, into);
        true
    }

    /// Into an empty `into`, a swap of the two buffers: the queue keeps the taker's (empty)
    /// allocation for the next pushes.
    fn move_all(items: &mut VecDeque<T>, into: &mut VecDeque<T>) {
        if into.is_empty() {
            std::mem::swap(items, into);
        } else {
            into.append(items);
        }
    }

    /// The taker has stopped: later pushes are refused, and what waits is dropped (after the
    /// lock is released), so that nobody waits for an answer that cannot come.
    pub(super) fn stop_taking(&self) {
        let mut state = self.lock();
        state.gone = true;
        let left = std::mem::take(&mut state.items);
        drop(state);
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What waits is taken in push order, all at once; a closed queue is emptied before the
    /// taker hears it is closed.
    #[test]
    fn the_taker_gets_every_item_in_order_and_then_the_close() {
        let queue = OpQueue::new();
        let mut taken = VecDeque::new();
        assert!(!queue.take_waiting(&mut taken));
        for i in 0..3 {
            queue.push(i).unwrap();
        }
        assert!(queue.take_waiting(&mut taken));
        queue.push(3).unwrap();
        queue.close();
        assert!(queue.take_blocking(&mut taken));
        assert_eq!(taken, [0, 1, 2, 3]);
        taken.clear();
        assert!(!queue.take_blocking(&mut taken));
        assert!(taken.is_empty());
    }

    /// A taker blocked on an empty queue is woken by a push from another thread.
    #[test]
    fn a_push_wakes_a_blocked_taker() {
        let queue = OpQueue::new();
        std::thread::scope(|scope| {
            let taker = scope.spawn(|| {
                let mut taken = VecDeque::new();
                let mut all = Vec::new();
                while queue.take_blocking(&mut taken) {
                    all.extend(taken.drain(..));
                }
                all
            });
            for i in 0..100 {
                queue.push(i).unwrap();
            }
            queue.close();
            assert_eq!(taker.join().unwrap(), (0..100).collect::<Vec<_>>());
        });
    }

    /// Once the taker has stopped, a push is refused with its item, and what waited is dropped.
    #[test]
    fn a_stopped_taker_refuses_pushes_and_drops_what_waited() {
        let queue = OpQueue::new();
        let (reply, answer) = std::sync::mpsc::channel::<()>();
        queue.push(reply).unwrap();
        queue.stop_taking();
        assert!(answer.recv().is_err(), "the waiting item was dropped");
        let (reply, _answer) = std::sync::mpsc::channel::<()>();
        assert!(matches!(queue.push(reply), Err(Gone(_))));
    }
}
