//! An ephemeral [`JobStore`] held in memory, for tests and benchmarks: fast, and gone with the
//! process. Indexes keep `scan_pending`, `counts` and `purge_finished` from walking finished jobs.
//!
//! Records are kept compact, since a backlog is held whole:
//! - records sit in a vector, found by id through a hash table of their positions ([`IdTable`]:
//!   8 bytes a bucket, where a map would hold the whole record in each of its buckets);
//! - the id's text is the one the caller's `JobId` holds, shared with the runtime's queues;
//! - the tenant is stored once per store;
//! - a record's JSON (its payload, then its result) is one byte string ([`Json`]), inline in the
//!   record when it is small, rather than `serde_json::Value`s (a one-key object takes about 700
//!   bytes as a `Value`, and none beside the record here);
//! - the fields most records leave empty (lane, request id, error) are boxed apart.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use queue_core::{
    JobId, JobKind, JobRecord, JobStatus, JobStore, JobUpdate, LaneId, NewJob, QueueError, QueueResult,
    RequestId, SharedClock, StatusCounts, TenantId,
};
use serde_json::{Map, Number, Value};

use super::id_table::{IdTable, Probe, Slot};
use super::{kind_index, status_index};

/// The tags of [`Json`]'s encoding. Numbers keep their `serde_json` variant (`u64`, negative
/// `i64`, `f64`), so a value decodes to exactly the value it was encoded from.
mod tag {
    pub(super) const NULL: u8 = 0;
    pub(super) const FALSE: u8 = 1;
    pub(super) const TRUE: u8 = 2;
    /// A `u64`, as a varint.
    pub(super) const POS: u8 = 3;
    /// A negative `i64` `n`, as the varint of `!n`.
    pub(super) const NEG: u8 = 4;
    /// An `f64`, as 8 little-endian bytes.
    pub(super) const FLOAT: u8 = 5;
    /// A length (varint), then UTF-8.
    pub(super) const STRING: u8 = 6;
    /// A count (varint), then the items.
    pub(super) const ARRAY: u8 = 7;
    /// A count (varint), then per entry the key (length, UTF-8) and the value.
    pub(super) const OBJECT: u8 = 8;
}

/// Bytes being written: in place while they fit in [`INLINE`], so that encoding a small value
/// allocates nothing, then on the heap.
#[derive(Debug)]
struct Buf {
    len: usize,
    inline: [u8; INLINE],
    /// Everything written, once it no longer fits inline; empty until then.
    heap: Vec<u8>,
}

impl Buf {
    const fn new() -> Self {
        Self { len: 0, inline: [0; INLINE], heap: Vec::new() }
    }

    fn push(&mut self, byte: u8) {
        // Most bytes written are single ones (tags, lengths): stored without a call.
        if self.heap.is_empty()
            && let Some(room) = self.inline.get_mut(self.len)
        {
            *room = byte;
            self.len += 1;
        } else {
            self.extend_from_slice(&[byte]);
        }
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() {
            if let Some(room) = self.inline.get_mut(self.len..self.len + bytes.len()) {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
                return;
            }
            self.heap.reserve(2 * INLINE + bytes.len());
            self.heap.extend_from_slice(&self.inline[..self.len]);
        }
        self.heap.extend_from_slice(bytes);
    }

    fn as_slice(&self) -> &[u8] {
        if self.heap.is_empty() { &self.inline[..self.len] } else { &self.heap }
    }
}

fn put_varint(out: &mut Buf, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Buf, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `value` to `out`.
fn encode(value: &Value, out: &mut Buf) {
    match value {
        Value::Null => out.push(tag::NULL),
        Value::Bool(false) => out.push(tag::FALSE),
        Value::Bool(true) => out.push(tag::TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(tag::POS);
                put_varint(out, u);
            } else if let Some(i) = n.as_i64() {
                // Negative here (a non-negative one is a `u64`), so `!i` is not.
                out.push(tag::NEG);
                put_varint(out, !i as u64);
            } else {
                out.push(tag::FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or_default().to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(tag::STRING);
            put_str(out, s);
        }
        Value::Array(items) => {
            out.push(tag::ARRAY);
            put_varint(out, items.len() as u64);
            for item in items {
                encode(item, out);
            }
        }
        Value::Object(map) => {
            out.push(tag::OBJECT);
            put_varint(out, map.len() as u64);
            for (k, v) in map {
                put_str(out, k);
                encode(v, out);
            }
        }
    }
}

/// The encoding of `value`, on its own.
fn encoded(value: &Value) -> Buf {
    let mut out = Buf::new();
    encode(value, &mut out);
    out
}

/// Reads values back from bytes that [`encode`] wrote (and nothing else): anything else is a
/// bug of this module, hence the panics.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.bytes.split_first().unwrap_or_else(|| unreachable!("truncated JSON encoding"));
        self.bytes = rest;
        b
    }

    fn varint(&mut self) -> u64 {
        let mut n = 0;
        let mut shift = 0;
        loop {
            let b = self.byte();
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    fn len(&mut self) -> usize {
        usize::try_from(self.varint()).unwrap_or_else(|e| unreachable!("a stored length fits: {e}"))
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        taken
    }

    fn str(&mut self) -> &'a str {
        let n = self.len();
        std::str::from_utf8(self.take(n)).unwrap_or_else(|e| unreachable!("stored from a str: {e}"))
    }

    fn value(&mut self) -> Value {
        match self.byte() {
            tag::NULL => Value::Null,
            tag::FALSE => Value::Bool(false),
            tag::TRUE => Value::Bool(true),
            tag::POS => Value::Number(self.varint().into()),
            tag::NEG => Value::Number((!self.varint() as i64).into()),
            tag::FLOAT => {
                let bytes: [u8; 8] = self.take(8).try_into().unwrap_or_else(|_| unreachable!("8 bytes"));
                // Stored from a `Number`, so finite.
                Number::from_f64(f64::from_le_bytes(bytes)).map_or(Value::Null, Value::Number)
            }
            tag::STRING => Value::String(self.str().to_owned()),
            tag::ARRAY => {
                let n = self.len();
                Value::Array((0..n).map(|_| self.value()).collect())
            }
            tag::OBJECT => {
                // Inserting one by one allocates only the map's nodes; collecting would first
                // gather the entries in a vector and sort it.
                let mut map = Map::new();
                for _ in 0..self.len() {
                    let k = self.str().to_owned();
                    map.insert(k, self.value());
                }
                Value::Object(map)
            }
            other => unreachable!("unknown JSON tag {other}"),
        }
    }

    /// Moves past one value without building it.
    fn skip(&mut self) {
        match self.byte() {
            tag::POS | tag::NEG => {
                self.varint();
            }
            tag::FLOAT => {
                self.take(8);
            }
            tag::STRING => {
                let n = self.len();
                self.take(n);
            }
            tag::ARRAY => {
                for _ in 0..self.len() {
                    self.skip();
                }
            }
            tag::OBJECT => {
                for _ in 0..self.len() {
                    let n = self.len();
                    self.take(n);
                    self.skip();
                }
            }
            _ => {}
        }
    }
}

/// How many bytes [`Bytes`] holds inline: what fits beside its tag and length in the 24 bytes
/// that a boxed slice and its tag take anyway.
const INLINE: usize = 22;

/// A byte string, inline when it is short, so a small payload costs no allocation of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

impl Bytes {
    fn from_buf(buf: Buf) -> Self {
        if buf.heap.is_empty() {
            Self::Inline { len: buf.len as u8, bytes: buf.inline }
        } else {
            Self::Boxed(buf.heap.into_boxed_slice())
        }
    }

    /// `first` then `second`, allocating only when they do not fit inline.
    fn concat(first: &[u8], second: &[u8]) -> Self {
        let len = first.len() + second.len();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..first.len()].copy_from_slice(first);
            bytes[first.len()..len].copy_from_slice(second);
            Self::Inline { len: len as u8, bytes }
        } else {
            let mut bytes = Vec::with_capacity(len);
            bytes.extend_from_slice(first);
            bytes.extend_from_slice(second);
            Self::Boxed(bytes.into_boxed_slice())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Boxed(bytes) => bytes,
        }
    }
}

/// A record's JSON in as little memory as it takes: its payload, then its result when it has
/// one, encoded one after the other in one [`Bytes`]. It decodes to exactly the values it was
/// made from (numbers keep their kind, object entries their order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Json(Bytes);

impl Json {
    fn new(payload: &Value) -> Self {
        Self(Bytes::from_buf(encoded(payload)))
    }

    fn reader(&self) -> Reader<'_> {
        Reader { bytes: self.0.as_slice() }
    }

    fn payload(&self) -> Value {
        self.reader().value()
    }

    fn payload_and_result(&self) -> (Value, Option<Value>) {
        let mut reader = self.reader();
        let payload = reader.value();
        let result = (!reader.bytes.is_empty()).then(|| reader.value());
        (payload, result)
    }

    /// The same payload with `result` (as [`encoded`] returns it) in place of any result.
    /// `has_result` says whether there is one: when there is none, the payload is all the
    /// bytes, and it is not walked to find where it ends.
    fn with_result(&self, result: &[u8], has_result: bool) -> Self {
        let all = self.0.as_slice();
        let payload = if has_result {
            let mut reader = self.reader();
            reader.skip();
            &all[..all.len() - reader.bytes.len()]
        } else {
            all
        };
        Self(Bytes::concat(payload, result))
    }
}

/// A record without its tenant (the store's).
///
/// The vector of records has room for up to twice as many as it holds (though the untouched
/// part of a large vector takes no memory), so every byte here counts about once or twice per
/// job: the fields most records leave empty live in a box of their own ([`Rare`]).
#[derive(Debug)]
struct Stored {
    id: JobId,
    kind: JobKind,
    status: JobStatus,
    attempt: u32,
    lease_epoch: u64,
    seq: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    json: Json,
    /// Whether `json` holds a result after the payload (in bytes that padding took anyway).
    has_result: bool,
    /// `None` when the record has no lane, request id nor error (most upload jobs).
    rare: Option<Box<Rare>>,
}

/// The fields of a record that most records leave empty.
#[derive(Debug, Default)]
struct Rare {
    lane: Option<LaneId>,
    request_id: Option<RequestId>,
    error: Option<Box<str>>,
}

impl Rare {
    /// `rare` boxed, or `None` when it holds nothing.
    fn boxed(rare: Self) -> Option<Box<Self>> {
        let empty = rare.lane.is_none() && rare.request_id.is_none() && rare.error.is_none();
        (!empty).then(|| Box::new(rare))
    }
}

impl Stored {
    /// The record, with `null` as payload and no result.
    fn head(&self, tenant: &TenantId) -> JobRecord {
        let rare = self.rare.as_deref();
        JobRecord {
            id: self.id.clone(),
            kind: self.kind,
            tenant: tenant.clone(),
            lane: rare.and_then(|r| r.lane.clone()),
            request_id: rare.and_then(|r| r.request_id.clone()),
            status: self.status,
            attempt: self.attempt,
            lease_epoch: self.lease_epoch,
            seq: self.seq,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            payload: Value::Null,
            result: None,
            error: rare.and_then(|r| r.error.as_deref()).map(str::to_owned),
        }
    }

    fn record(&self, tenant: &TenantId) -> JobRecord {
        let mut record = self.head(tenant);
        (record.payload, record.result) = self.json.payload_and_result();
        record
    }

    fn set_error(&mut self, error: Box<str>) {
        match &mut self.rare {
            Some(rare) => rare.error = Some(error),
            None => self.rare = Some(Box::new(Rare { error: Some(error), ..Rare::default() })),
        }
    }
}

/// A key of a [`SlotIndex`]: ordered, and for `seq` keys also a distance, so that an entry is
/// found without a search while none has been dropped from the middle.
trait IndexKey: Ord + Copy {
    /// How far from an entry of `first` the entry of `self` sits when keys go one by one.
    fn offset_from(self, _first: Self) -> Option<usize> {
        None
    }
}

impl IndexKey for u64 {
    fn offset_from(self, first: Self) -> Option<usize> {
        self.checked_sub(first).and_then(|d| usize::try_from(d).ok())
    }
}

/// `(updated_at_ms, seq)`: found by a search (only a delete of a finished record looks one up).
impl IndexKey for (u64, u64) {}

/// Record slots in key order: the pending jobs of one kind by `seq` (what `scan_pending` walks),
/// and the finished jobs by the time they finished (what `purge_finished` takes from the front).
///
/// Keys come about in order (jobs are created with ever larger sequence numbers, and finish at
/// the clock's time), so entries are appended and a sorted deque does what a tree would in a
/// third of the memory, without a node to allocate nor a path of nodes to walk per entry. One
/// out of order goes in its place, found among the last few entries or by a binary search. A
/// removed entry is blanked where it is (so while none has been dropped from the middle, the
/// entry of `seq` sits `seq − first` from the front, found without a search); blanks are dropped
/// at the ends, and all at once when they outnumber the live entries.
#[derive(Debug)]
struct SlotIndex<K> {
    /// `(key, slot)`, by key; a blank has the slot [`BLANK`].
    entries: VecDeque<(K, Slot)>,
    live: usize,
}

/// The slot of a blanked [`SlotIndex`] entry.
const BLANK: Slot = Slot::MAX;

impl<K> Default for SlotIndex<K> {
    fn default() -> Self {
        Self { entries: VecDeque::new(), live: 0 }
    }
}

impl<K: IndexKey> SlotIndex<K> {
    fn insert(&mut self, key: K, slot: Slot) {
        let len = self.entries.len();
        let at = if self.entries.back().is_none_or(|&(last, _)| last < key) {
            len
        } else {
            // Out of order, most often by a few places (jobs finishing in the same millisecond
            // out of `seq` order): look among the last few before searching them all.
            let near = len.saturating_sub(8);
            if self.entries[near].0 < key {
                near + self.entries.range(near..).take_while(|&&(k, _)| k < key).count()
            } else {
                self.entries.partition_point(|&(k, _)| k < key)
            }
        };
        self.entries.insert(at, (key, slot));
        self.live += 1;
    }

    fn position(&self, key: K) -> Option<usize> {
        let &(first, _) = self.entries.front()?;
        let &(last, _) = self.entries.back()?;
        let is_at = |at: usize| self.entries.get(at).is_some_and(|&(k, _)| k == key);
        if let Some(guess) = key.offset_from(first)
            && is_at(guess)
        {
            return Some(guess);
        }
        // Counted from the back: what follows the last place where entries were dropped from the
        // middle (when blanks outnumbered the live ones behind a job that stays pending long) is
        // still one entry per key.
        if let Some(back) = last.offset_from(key)
            && let Some(guess) = (self.entries.len() - 1).checked_sub(back)
            && is_at(guess)
        {
            return Some(guess);
        }
        self.entries.binary_search_by(|&(k, _)| k.cmp(&key)).ok()
    }

    /// Removes the entry of `key`, returning its slot.
    fn remove(&mut self, key: K) -> Option<Slot> {
        let at = self.position(key)?;
        let slot = std::mem::replace(&mut self.entries[at].1, BLANK);
        if slot == BLANK {
            return None;
        }
        self.live -= 1;
        self.tidy();
        Some(slot)
    }

    /// Removes the first live entry if its key is below `bound`, returning its slot.
    fn pop_first_below(&mut self, bound: K) -> Option<Slot> {
        let &(key, slot) = self.entries.front()?;
        if key >= bound {
            return None;
        }
        // The front is never a blank: `tidy` drops those.
        self.entries.pop_front();
        self.live -= 1;
        self.tidy();
        Some(slot)
    }

    /// Drops blanks at the ends, or everywhere when they outnumber the live entries.
    fn tidy(&mut self) {
        while self.entries.front().is_some_and(|&(_, s)| s == BLANK) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|&(_, s)| s == BLANK) {
            self.entries.pop_back();
        }
        if self.entries.len() > 2 * self.live + 64 {
            self.entries.retain(|&(_, s)| s != BLANK);
        }
        // A drained backlog gives its memory back.
        if self.entries.capacity() > 4 * self.entries.len() + 1024 {
            self.entries.shrink_to(2 * self.entries.len());
        }
    }

    /// The slots, by key.
    fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.entries.iter().map(|&(_, slot)| slot).filter(|&slot| slot != BLANK)
    }
}

/// One tenant's job records behind a mutex.
///
/// Every operation is a short critical section with no `.await` inside, so a std mutex is the
/// cheapest correct lock here.
pub struct MemoryJobStore {
    tenant: TenantId,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The next sequence number to hand out; only ever grows.
    next_seq: u64,
    /// The records; a removed one leaves `None`, whose slot is in `free`.
    records: Vec<Option<Stored>>,
    /// Slots of `records` that hold nothing, reused first.
    free: Vec<Slot>,
    /// The slot of every record, hashed by the record's id.
    by_id: IdTable,
    hasher: RandomState,
    /// Queued and processing jobs per kind, by `seq`.
    pending: [SlotIndex<u64>; JobKind::ALL.len()],
    /// Jobs per kind and state, kept up to date so `counts` is O(1).
    counts: [[u64; JobStatus::ALL.len()]; JobKind::ALL.len()],
    /// The slots of the records last looked up by `update`, by the address of their id's text
    /// ([`Inner::find_by_address`]).
    recent: [(usize, Slot); RECENT],
    /// Terminal jobs by the time they finished (then `seq`): what `purge_finished` removes from
    /// the front. A terminal record never changes again, so its key never goes stale.
    finished: SlotIndex<(u64, u64)>,
}

/// How many slots [`Inner::find_by_address`] remembers: about twice the jobs running at once
/// with a hundred workers, in 4 KiB.
const RECENT: usize = 256;

/// Where a record sits in the indexes: everything that decides its index entries.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Place {
    kind: JobKind,
    status: JobStatus,
    seq: u64,
    updated_at_ms: u64,
}

impl Place {
    const fn of(record: &Stored) -> Self {
        Self {
            kind: record.kind,
            status: record.status,
            seq: record.seq,
            updated_at_ms: record.updated_at_ms,
        }
    }
}

impl Inner {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot of the record `id`.
    fn find(&self, id: &str) -> Option<Slot> {
        let records = &self.records;
        self.by_id
            .find(self.hash(id), |slot| records[slot as usize].as_ref().is_some_and(|r| r.id.as_str() == id))
    }

    /// The slot of the record `id`, found without hashing its text when `id` shares its text
    /// with the record (it is a clone of the record's `JobId`, as the runtime's are) and the
    /// record was looked up here lately: a job's end finds its record this way after its start.
    ///
    /// An entry remembers the address of the text of the id it was looked up by. It is only a
    /// hint: the record in the remembered slot is taken only if its id's text is at that same
    /// address. Both texts are alive (the caller's id is borrowed, the record owns its own), so
    /// one address means one allocation, hence the same id; any other case looks the id up by
    /// its hash, as `find` does, and remembers what it found.
    fn find_by_address(&mut self, id: &str) -> Option<Slot> {
        let address = id.as_ptr().addr();
        // The texts are heap allocations, 16-byte aligned: the low bits tell nothing.
        let at =
            ((address >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RECENT.trailing_zeros());
        let entry = &mut self.recent[at as usize];
        if entry.0 == address
            && let Some(Some(stored)) = self.records.get(entry.1 as usize)
            && stored.id.as_str().as_ptr().addr() == address
        {
            return Some(entry.1);
        }
        let slot = self.find(id)?;
        self.recent[at as usize] = (address, slot);
        Some(slot)
    }

    /// The record in `slot`, which an index or the id table named.
    fn stored(&self, slot: Slot) -> &Stored {
        self.records[slot as usize].as_ref().unwrap_or_else(|| unreachable!("an indexed slot holds a record"))
    }

    /// Takes the record out of `slot` and out of the id table (not out of the other indexes).
    fn take(&mut self, slot: Slot) -> Option<Stored> {
        let stored = self.records[slot as usize].take()?;
        let hash = self.hash(stored.id.as_str());
        self.by_id.remove(hash, slot);
        self.free.push(slot);
        Some(stored)
    }

    fn recount(&mut self, before: Option<Place>, after: Option<Place>) {
        if let Some(place) = before {
            let count = &mut self.counts[kind_index(place.kind)][status_index(place.status)];
            *count = count.saturating_sub(1);
        }
        if let Some(place) = after {
            self.counts[kind_index(place.kind)][status_index(place.status)] += 1;
        }
    }

    /// Removes the index entry of `place`, returning its slot.
    fn unindex(&mut self, place: Place) -> Option<Slot> {
        if place.status.is_pending() {
            self.pending[kind_index(place.kind)].remove(place.seq)
        } else {
            self.finished.remove((place.updated_at_ms, place.seq))
        }
    }

    fn index(&mut self, place: Place, slot: Slot) {
        if place.status.is_pending() {
            self.pending[kind_index(place.kind)].insert(place.seq, slot);
        } else {
            self.finished.insert((place.updated_at_ms, place.seq), slot);
        }
    }

    /// Stores `job` as a new queued record created at `now`; returns its sequence number.
    fn insert(&mut self, job: &NewJob, json: Json, now: u64) -> QueueResult<u64> {
        let hash = self.hash(job.id.as_str());
        let records = &self.records;
        let Probe::Vacant { bucket } =
            self.by_id.probe(hash, |slot| records[slot as usize].as_ref().is_some_and(|r| r.id == job.id))
        else {
            return Err(QueueError::AlreadyExists { job: job.id.clone() });
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => Slot::try_from(self.records.len())
                .ok()
                .filter(|&slot| slot != BLANK)
                .ok_or_else(|| QueueError::storage("the memory job store is full"))?,
        };
        self.by_id.insert_at(bucket, hash, slot);
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = Stored {
            id: job.id.clone(),
            kind: job.kind,
            status: JobStatus::Queued,
            attempt: 0,
            lease_epoch: 0,
            seq,
            created_at_ms: now,
            updated_at_ms: now,
            json,
            has_result: false,
            rare: Rare::boxed(Rare {
                lane: job.lane.clone(),
                request_id: job.request_id.clone(),
                error: None,
            }),
        };
        let place = Place::of(&stored);
        if let Some(free) = self.records.get_mut(slot as usize) {
            *free = Some(stored);
        } else {
            self.records.push(Some(stored));
        }
        self.recount(None, Some(place));
        self.index(place, slot);
        Ok(seq)
    }

    /// Moves a record's index entry after a transition; its slot comes from the old entry.
    fn move_index(&mut self, before: Place, after: Place) {
        self.recount(Some(before), Some(after));
        // A job that stays pending keeps its entry: its seq does not change.
        if before.status.is_pending() && after.status.is_pending() {
            return;
        }
        if let Some(slot) = self.unindex(before) {
            self.index(after, slot);
        }
    }
}

impl MemoryJobStore {
    /// An empty store for `tenant`, reading time from `clock`.
    #[must_use]
    pub fn new(tenant: TenantId, clock: SharedClock) -> Self {
        Self {
            tenant,
            clock,
            inner: Mutex::new(Inner {
                next_seq: 1,
                records: Vec::new(),
                free: Vec::new(),
                by_id: IdTable::default(),
                hasher: RandomState::new(),
                recent: [(0, 0); RECENT],
                pending: Default::default(),
                counts: Default::default(),
                finished: SlotIndex::default(),
            }),
        }
    }

    /// How many records the store holds, in every state.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether the store holds no record at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the maps half-updated in a way that
        // matters more than losing the whole store, so keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `update` to the record `id` under one lock: the checks of `JobRecord::apply`
    /// (`JobUpdate::check`), then its changes, made to the stored record in place (no record is
    /// built for them). `answer` makes what the caller gets from the record as updated and the
    /// new result, if the update set one.
    fn update<T>(
        &self,
        id: &JobId,
        mut update: JobUpdate,
        answer: impl FnOnce(&Stored, &TenantId, Option<Value>) -> T,
    ) -> QueueResult<T> {
        let now = self.clock.now_ms();
        // The new result is kept aside: the answer gets it by move, the store its encoding (made
        // here, outside the lock), and nothing is cloned.
        let result = update.result.take();
        let encoded_result = result.as_ref().map(encoded);
        let mut inner = self.lock();
        let Some(slot) = inner.find_by_address(id.as_str()) else {
            return Err(QueueError::NotFound { job: id.clone() });
        };
        let Some(stored) = inner.records[slot as usize].as_mut() else {
            unreachable!("the id table names a slot that holds a record");
        };
        // Nothing is written before the checks pass, so there is nothing to undo.
        update.check(id, stored.status, stored.lease_epoch)?;
        let before = Place::of(stored);
        update.move_state(&mut stored.status, &mut stored.lease_epoch, &mut stored.attempt);
        if let Some(error) = update.error {
            stored.set_error(error.into_boxed_str());
        }
        if let Some(encoded) = encoded_result {
            stored.json = stored.json.with_result(encoded.as_slice(), stored.has_result);
            stored.has_result = true;
        }
        stored.updated_at_ms = now;
        let after = Place::of(stored);
        let answer = answer(stored, &self.tenant, result);
        inner.move_index(before, after);
        Ok(answer)
    }
}

impl MemoryJobStore {
    fn transition_record(&self, id: &JobId, update: JobUpdate) -> QueueResult<JobRecord> {
        self.update(id, update, |stored, tenant, result| {
            let mut record = stored.head(tenant);
            match result {
                Some(result) => {
                    record.payload = stored.json.payload();
                    record.result = Some(result);
                }
                None => (record.payload, record.result) = stored.json.payload_and_result(),
            }
            record
        })
    }
}

impl fmt::Debug for MemoryJobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs = self.inner.try_lock().map(|inner| inner.by_id.len()).ok();
        f.debug_struct("MemoryJobStore").field("tenant", &self.tenant).field("jobs", &jobs).finish()
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: NewJob) -> QueueResult<JobRecord> {
        let now = self.clock.now_ms();
        // Encoded outside the lock: the caller gets its payload back as given, the store keeps
        // the encoding.
        let json = Json::new(&job.payload);
        let seq = self.lock().insert(&job, json, now)?;
        Ok(JobRecord::from_new(self.tenant.clone(), job, seq, now))
    }

    /// The whole batch under one lock: its jobs get consecutive sequence numbers.
    async fn create_many(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<QueueResult<JobRecord>>> {
        let now = self.clock.now_ms();
        let jsons: Vec<Json> = jobs.iter().map(|job| Json::new(&job.payload)).collect();
        let seqs: Vec<QueueResult<u64>> = {
            let mut inner = self.lock();
            jobs.iter().zip(jsons).map(|(job, json)| inner.insert(job, json, now)).collect()
        };
        Ok(jobs
            .into_iter()
            .zip(seqs)
            .map(|(job, seq)| seq.map(|seq| JobRecord::from_new(self.tenant.clone(), job, seq, now)))
            .collect())
    }

    async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>> {
        let inner = self.lock();
        Ok(inner.find(id.as_str()).map(|slot| inner.stored(slot).record(&self.tenant)))
    }

    async fn transition(&self, id: &JobId, update: JobUpdate) -> QueueResult<JobRecord> {
        self.transition_record(id, update)
    }

    /// As `transition`, without a record: the update is checked and made on the stored fields,
    /// and nothing is decoded nor cloned for an answer nobody reads.
    async fn settle(&self, id: &JobId, update: JobUpdate) -> QueueResult<()> {
        self.update(id, update, |_, _, _| ())
    }

    /// Always done at once: nothing here waits.
    fn transition_now(&self, id: &JobId, update: JobUpdate) -> Result<QueueResult<JobRecord>, JobUpdate> {
        Ok(self.transition_record(id, update))
    }

    /// Always done at once: nothing here waits.
    fn settle_now(&self, id: &JobId, update: JobUpdate) -> Result<QueueResult<()>, JobUpdate> {
        Ok(self.update(id, update, |_, _, _| ()))
    }

    async fn delete(&self, id: &JobId) -> QueueResult<bool> {
        let mut inner = self.lock();
        let Some(stored) = inner.find(id.as_str()).and_then(|slot| inner.take(slot)) else {
            return Ok(false);
        };
        let place = Place::of(&stored);
        inner.recount(Some(place), None);
        inner.unindex(place);
        Ok(true)
    }

    async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>> {
        let inner = self.lock();
        Ok(inner.pending[kind_index(kind)]
            .slots()
            .map(|slot| inner.stored(slot).record(&self.tenant))
            .collect())
    }

    async fn list(
        &self,
        kind: Option<JobKind>,
        status: JobStatus,
        limit: usize,
    ) -> QueueResult<Vec<JobRecord>> {
        let inner = self.lock();
        let mut found: Vec<&Stored> = if status.is_pending() {
            // Pending jobs are indexed; walk only those.
            let kinds: Vec<JobKind> = kind.map_or_else(|| JobKind::ALL.to_vec(), |k| vec![k]);
            kinds
                .into_iter()
                .flat_map(|k| inner.pending[kind_index(k)].slots())
                .map(|slot| inner.stored(slot))
                .filter(|r| r.status == status)
                .collect()
        } else {
            inner
                .records
                .iter()
                .flatten()
                .filter(|r| r.status == status && kind.is_none_or(|k| r.kind == k))
                .collect()
        };
        found.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
        Ok(found.into_iter().take(limit).map(|stored| stored.record(&self.tenant)).collect())
    }

    async fn counts(&self, kind: JobKind) -> QueueResult<StatusCounts> {
        let inner = self.lock();
        let row = &inner.counts[kind_index(kind)];
        let mut counts = StatusCounts::default();
        for status in JobStatus::ALL {
            counts.add(status, row[status_index(status)]);
        }
        Ok(counts)
    }

    async fn purge_finished(&self, before_ms: u64) -> QueueResult<usize> {
        let mut inner = self.lock();
        let mut purged = 0;
        while let Some(slot) = inner.finished.pop_first_below((before_ms, 0)) {
            if let Some(record) = inner.take(slot) {
                let count = &mut inner.counts[kind_index(record.kind)][status_index(record.status)];
                *count = count.saturating_sub(1);
                purged += 1;
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// An upload job `id` with `payload`.
    fn upload(id: &JobId, payload: Value) -> NewJob {
        NewJob { id: id.clone(), kind: JobKind::Upload, lane: None, request_id: None, payload }
    }

    // Every record takes this much in the vector, whatever its JSON: a field added here costs
    // every queued job.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_stored_record_with_its_id_takes_at_most_88_bytes() {
        let size = std::mem::size_of::<Option<Stored>>();
        assert!(size <= 88, "{size} bytes");
    }

    #[test]
    fn json_converts_back_to_the_same_payload_and_result() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0.1),
            json!(1.0),
            json!(-7),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e300),
            json!("text with \"quotes\" and ünïcode"),
            json!([1, [2, {}], []]),
            json!({ "z": 1, "a": { "nested": [null, false] }, "": "" }),
            json!({ "long": "x".repeat(300) }),
        ];
        for payload in &values {
            let json = Json::new(payload);
            assert_eq!(json.payload(), *payload);
            assert_eq!(json.payload_and_result(), (payload.clone(), None));
            for result in &values {
                let with = json.with_result(encoded(result).as_slice(), false);
                assert_eq!(with.payload_and_result(), (payload.clone(), Some(result.clone())));
                // A second result replaces the first.
                let again = with.with_result(encoded(&json!("again")).as_slice(), true);
                assert_eq!(again.payload_and_result(), (payload.clone(), Some(json!("again"))));
            }
        }
    }

    #[test]
    fn a_small_payload_and_its_result_stay_inline() {
        let json = Json::new(&json!({ "i": 49_999 })).with_result(encoded(&json!(null)).as_slice(), false);
        assert!(matches!(json.0, Bytes::Inline { .. }), "{json:?}");
        let big = Json::new(&json!({ "text": "x".repeat(INLINE) }));
        assert!(matches!(big.0, Bytes::Boxed(_)), "{big:?}");
    }

    #[test]
    fn values_encoded_across_the_inline_size_convert_back_with_any_result() {
        // Strings from empty to past two inline sizes: an encoding that moves from its inline
        // buffer to the heap part-way (the object's second key) keeps every byte.
        for n in 0..3 * INLINE {
            let payload = json!({ "a": "p".repeat(n), "b": n });
            let result = json!(["r".repeat(n / 2)]);
            let json = Json::new(&payload).with_result(encoded(&result).as_slice(), false);
            assert_eq!(json.payload_and_result(), (payload, Some(result)), "n = {n}");
        }
    }

    #[tokio::test]
    async fn purge_takes_the_records_finished_before_the_bound_whatever_the_order_they_finished_in() {
        use queue_core::ManualClock;

        let clock = ManualClock::new(100);
        let store = MemoryJobStore::new(TenantId::default_tenant(), Arc::new(clock.clone()));
        let ids: Vec<JobId> = (0..6).map(|i| JobId::new(format!("j{i}")).unwrap()).collect();
        for id in &ids {
            store.create(upload(id, json!(1))).await.unwrap();
            store.transition(id, JobUpdate::start(1)).await.unwrap();
        }
        // Finished at 200, 150 (the clock stepped back), 300, 150, 250, 200.
        for (id, at) in ids.iter().zip([200, 150, 300, 150, 250, 200]) {
            clock.set(at);
            store.settle(id, JobUpdate::done(1, json!(null))).await.unwrap();
        }
        // A finished record deleted from the middle of the index.
        assert!(store.delete(&ids[5]).await.unwrap());
        let left = |store: &MemoryJobStore| {
            let inner = store.lock();
            inner.finished.slots().map(|slot| inner.stored(slot).id.as_str().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(left(&store), ["j1", "j3", "j0", "j4", "j2"], "by finish time, then seq");
        assert_eq!(store.purge_finished(150).await.unwrap(), 0);
        assert_eq!(store.purge_finished(201).await.unwrap(), 3);
        assert_eq!(left(&store), ["j4", "j2"]);
        assert!(store.get(&ids[0]).await.unwrap().is_none());
        assert_eq!(store.counts(JobKind::Upload).await.unwrap().done, 2);
        assert_eq!(store.purge_finished(u64::MAX).await.unwrap(), 2);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn an_update_finds_its_record_whatever_the_slot_remembered_for_its_id_holds() {
        use queue_core::ManualClock;

        let store = MemoryJobStore::new(TenantId::default_tenant(), Arc::new(ManualClock::new(1)));
        let new = |id: &JobId| upload(id, json!(1));
        let a = JobId::new("a").unwrap();
        store.create(new(&a)).await.unwrap();
        store.transition(&a, JobUpdate::start(1)).await.unwrap();
        // The same text in another allocation: found by its hash.
        let a_again = JobId::new("a").unwrap();
        store.settle(&a_again, JobUpdate::done(1, json!(null))).await.unwrap();
        // `a`'s slot now holds `b`: an update by `a`'s text must not take `b`'s record.
        assert!(store.delete(&a).await.unwrap());
        let b = JobId::new("b").unwrap();
        store.create(new(&b)).await.unwrap();
        assert!(matches!(store.transition(&a, JobUpdate::start(1)).await, Err(QueueError::NotFound { .. })));
        assert_eq!(store.get(&b).await.unwrap().unwrap().status, JobStatus::Queued, "b untouched");
        // And `a` again, created anew in another slot, is found under the same text.
        let c = JobId::new("c").unwrap();
        store.create(new(&c)).await.unwrap();
        store.create(new(&a)).await.unwrap();
        assert_eq!(store.transition(&a, JobUpdate::start(1)).await.unwrap().id, a);
        assert_eq!(store.transition(&b, JobUpdate::start(1)).await.unwrap().id, b);
        assert_eq!(store.get(&c).await.unwrap().unwrap().status, JobStatus::Queued, "c untouched");
    }

    #[tokio::test]
    async fn transition_now_and_settle_now_answer_at_once_as_transition_and_settle_do() {
        use queue_core::ManualClock;

        let store = MemoryJobStore::new(TenantId::default_tenant(), Arc::new(ManualClock::new(7)));
        let id = JobId::new("j").unwrap();
        store.create(upload(&id, json!({ "a": 1 }))).await.unwrap();
        let Ok(started) = store.transition_now(&id, JobUpdate::start(3)) else { panic!("not at once") };
        let started = started.unwrap();
        assert_eq!(
            (started.status, started.lease_epoch, started.payload),
            (JobStatus::Processing, 3, json!({ "a": 1 }))
        );
        // The fence holds, at once as with the async calls.
        let Ok(stale) = store.settle_now(&id, JobUpdate::done(2, json!("late"))) else {
            panic!("not at once")
        };
        assert!(matches!(stale, Err(QueueError::StaleLease { .. })));
        assert!(matches!(store.settle_now(&id, JobUpdate::done(3, json!("ok"))), Ok(Ok(()))));
        let done = store.get(&id).await.unwrap().unwrap();
        assert_eq!((done.status, done.result), (JobStatus::Done, Some(json!("ok"))));
    }

    #[test]
    fn the_pending_index_keeps_seq_order_whatever_the_removal_order() {
        let mut index = SlotIndex::<u64>::default();
        for seq in 1..=1000 {
            index.insert(seq * 2, Slot::try_from(seq).unwrap());
        }
        // Removing every other entry from the middle, then the ends.
        for seq in (200..800).step_by(2) {
            assert_eq!(index.remove(seq * 2), Some(Slot::try_from(seq).unwrap()));
        }
        assert_eq!(index.remove(400), None, "already removed");
        assert_eq!(index.remove(3), None, "never there");
        for seq in (1..10).chain(990..=1000) {
            assert_eq!(index.remove(seq * 2), Some(Slot::try_from(seq).unwrap()));
        }
        // An entry older than the last goes in its place.
        index.insert(501, 7);
        let expected: Vec<Slot> = (10..200)
            .chain((201..800).step_by(2))
            .chain(800..990)
            .map(|seq| Slot::try_from(seq).unwrap())
            .flat_map(|slot| if slot == 251 { vec![7, 251] } else { vec![slot] })
            .collect();
        assert_eq!(index.slots().collect::<Vec<_>>(), expected);
        assert_eq!(index.live, expected.len());
        assert!(index.entries.len() <= 2 * index.live + 64, "blanks are dropped");
        // Behind an entry that stays, blanks dropped from the middle shift what follows: each is
        // still found.
        let mut index = SlotIndex::<u64>::default();
        for seq in 1..=1000 {
            index.insert(seq, Slot::try_from(seq).unwrap());
        }
        for seq in 2..=1000 {
            assert_eq!(index.remove(seq), Some(Slot::try_from(seq).unwrap()), "seq {seq}");
        }
        assert_eq!(index.slots().collect::<Vec<_>>(), [1]);
    }
}
