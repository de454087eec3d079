//! The set of sequence numbers the runtime holds (`in_flight`): one bit per `seq` between the
//! oldest and the newest held job.
//!
//! Jobs are queued and taken about in `seq` order, so inserts land near the end of the bitmap and
//! removals near its start: both touch words that stay in the CPU caches, however long the
//! backlog, where a hash set of ids is touched at a random place per job (a cache miss or two
//! per enqueue and per claim with a million queued, W5). A million held jobs take 125 KiB.
//!
//! The bitmap spans from the oldest held `seq` to the newest, so a job held for long (a stuck
//! handler) keeps one bit per job submitted after it: 125 KiB per million, against the store's
//! record of each of them.

use std::collections::VecDeque;

/// Sequence numbers, as a bitmap over the range they span.
#[derive(Debug, Default)]
pub(crate) struct HeldSeqs {
    /// Bit `i % 64` of word `i / 64` is `base + i`.
    words: VecDeque<u64>,
    /// A multiple of 64; the first word is never 0 (nor the last).
    base: u64,
}

impl HeldSeqs {
    fn position(&self, seq: u64) -> Option<(usize, u64)> {
        let offset = seq.checked_sub(self.base)?;
        let word = usize::try_from(offset / 64).ok()?;
        (word < self.words.len()).then_some((word, 1 << (offset % 64)))
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.position(seq).is_some_and(|(word, bit)| self.words[word] & bit != 0)
    }

    /// Adds `seq`; `false` when it was already there.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let start = seq - seq % 64;
        if self.words.is_empty() {
            self.base = start;
            self.words.push_back(0);
        }
        while start < self.base {
            self.words.push_front(0);
            self.base -= 64;
        }
        while self.position(seq).is_none() {
            self.words.push_back(0);
        }
        let Some((word, bit)) = self.position(seq) else { unreachable!("the words now cover seq") };
        let was = self.words[word] & bit != 0;
        self.words[word] |= bit;
        !was
    }

    /// Removes `seq`; `false` when it was not there.
    pub(crate) fn remove(&mut self, seq: u64) -> bool {
        let Some((word, bit)) = self.position(seq) else { return false };
        let was = self.words[word] & bit != 0;
        self.words[word] &= !bit;
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.base += 64;
        }
        while self.words.back() == Some(&0) {
            self.words.pop_back();
        }
        // A drained backlog gives its memory back.
        if self.words.capacity() > 4 * self.words.len() + 1024 {
            self.words.shrink_to(2 * self.words.len());
        }
        was
    }

    pub(crate) fn clear(&mut self) {
        self.words.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn agrees_with_a_set_whatever_the_order() {
        let mut held = HeldSeqs::default();
        let mut model = BTreeSet::new();
        // Ascending, then older ones (a rescan), then far ones, removed out of order.
        let seqs: Vec<u64> = (1000..1300).chain((0..1000).step_by(7)).chain([5000, 70, 1_000_000]).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            assert_eq!(held.insert(seq), model.insert(seq), "insert {seq}");
            if i % 3 == 0 {
                let gone = seqs[i / 2];
                assert_eq!(held.remove(gone), model.remove(&gone), "remove {gone}");
            }
        }
        assert!(!held.insert(1_000_000), "already there");
        for seq in 0..1_000_100 {
            assert_eq!(held.contains(seq), model.contains(&seq), "contains {seq}");
        }
        for seq in model.clone() {
            assert!(held.remove(seq));
        }
        assert!(!held.remove(1_000_000));
        assert!(held.words.is_empty(), "empty again: {} words", held.words.len());
    }
}
