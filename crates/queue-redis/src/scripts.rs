//! The backend's Lua scripts, loaded once per process (`redis::Script` runs EVALSHA and loads the
//! script on `NOSCRIPT`). The contract of each is at the top of its file under `src/lua/`.

use std::sync::LazyLock;

use lane_store::redis::Script;

use crate::store::{CLAIM_FIELDS, LEGACY_FIXED_FIELDS, STATE_FN, claim_field};

/// `read_claim(jk, id)` and the positions of the fields a start checks and changes, generated from
/// [`CLAIM_FIELDS`]: the one list of what a claim reads and answers, so that the scripts' `HMGET`
/// and the client's positional parse (`store::parse_claimed`) cannot drift apart. Needed by
/// `CLAIM_PLAIN_FN` and `START_CHAT_FN`, so every script that includes either starts with it.
static CLAIM_FIELDS_FN: LazyLock<String> = LazyLock::new(claim_fields_fn);

fn claim_fields_fn() -> String {
    /// Lua's 1-based position of a claimed field.
    const fn at(name: &str) -> usize {
        claim_field(name) + 1
    }
    const ID: usize = at("id");
    const STATE: usize = at("state");
    const FIXED: usize = at("fixed");
    const COUNT: usize = CLAIM_FIELDS.len();
    // The claim knows the job's id: the record's `id` field is not read back.
    let names: Vec<String> = CLAIM_FIELDS.iter().filter(|f| **f != "id").map(|f| format!("'{f}'")).collect();
    assert_eq!(ID, CLAIM_FIELDS.len(), "read_claim puts the id last, after what HMGET read");
    let legacy: Vec<String> = LEGACY_FIXED_FIELDS.iter().map(|f| format!("'{f}'")).collect();
    format!(
        "{STATE_FN}
-- Generated in scripts.rs from CLAIM_FIELDS (store.rs); shared by claim_plain_fn.lua and
-- start_chat_fn.lua (prepended before them), after state_fn.lua. read_claim(jk, id): the claimed
-- fields of job `id`'s record `jk`, values only, in CLAIM_FIELDS's order (false for a field the
-- hash lacks; the id, last, from the caller, not read back): one read serves a start's checks and
-- the claim's answer, patched after the start at CLAIM_STATE. A record written before the
-- `state` field is moved to it (legacy_state); one written before the `fixed` field holds its
-- four parts apart: they are read and joined as `write_job` joins them, so such a record is
-- claimed like any other. CLAIM_COUNT: how many values a record has.
local CLAIM_ID, CLAIM_STATE, CLAIM_COUNT = {ID}, {STATE}, {COUNT}
local function read_claim(jk, id)
  local h = redis.call('HMGET', jk, {})
  h[{ID}] = id
  if not h[{STATE}] then
    h[{STATE}] = legacy_state(jk)
  end
  if h[{STATE}] and not h[{FIXED}] then
    local f = redis.call('HMGET', jk, {})
    if f[1] and f[2] then
      h[{FIXED}] = f[1] .. '|' .. f[2] .. '|' .. (f[3] or '') .. '|' .. (f[4] or '')
    end
  end
  return h
end",
        names.join(", "),
        legacy.join(", ")
    )
}
/// `new_claim(id, at, fixed, payload, epoch)`, generated from [`CLAIM_FIELDS`] for
/// `HANDOFF_NEW_FN` and `HANDOFF_CHAT_FN`: the values a start of a job just created at `at`, with
/// the `fixed` field `write_job` wrote (job_create_fn.lua), under `epoch` and attempt 1, would
/// read, in CLAIM_FIELDS's order, built without reading them back and without a table of names.
static NEW_CLAIM_FN: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<&str> = CLAIM_FIELDS
        .iter()
        .map(|f| match *f {
            "id" => "id",
            "state" => "'processing|' .. epoch .. '|1|' .. at",
            "fixed" => "fixed",
            "payload" => "payload",
            // What a new job cannot have yet.
            "error" | "result" => "cjson.null",
            other => panic!("new_claim: no value for the claimed field {other}"),
        })
        .collect();
    format!(
        "-- Generated in scripts.rs from CLAIM_FIELDS (store.rs).\n\
         local function new_claim(id, at, fixed, payload, epoch)\n  return {{ {} }}\nend",
        values.join(", ")
    )
});
/// Gathers the writes many jobs make to one key (a counter, a sorted set) into one command per
/// key; needed by `CLAIM_PLAIN_FN`, `RECORD_OUTCOME_FN`, `START_CHAT_FN`,
/// `submit_plain.lua` and `complete_many.lua`.
const BATCH_FN: &str = include_str!("lua/batch_fn.lua");
/// `INFLIGHT_KEEPER`, the member that keeps `inflight` a skiplist; before `CLAIM_PLAIN_FN` and
/// `HANDOFF_NEW_FN`.
const INFLIGHT_KEEPER: &str = include_str!("lua/inflight_keeper.lua");
/// The claim function shared by `claim_plain` and `complete_many` (finish-and-claim-next), with
/// `INFLIGHT_KEEPER` before it.
const CLAIM_PLAIN_FN: &str =
    concat!(include_str!("lua/inflight_keeper.lua"), "\n", include_str!("lua/claim_plain_fn.lua"));
/// Pushes a job claimed for an idle worker onto its hand-off list; both sides of a submit's
/// hand-off (`HANDOFF_FN`, `HANDOFF_NEW_FN`) need it.
const PUSH_HANDED_FN: &str = include_str!("lua/push_handed_fn.lua");
/// Direct hand-off of a submitted job to an idle worker (the head of its ready list). Needs
/// `CLAIM_PLAIN_FN` and `PUSH_HANDED_FN` before it.
const HANDOFF_FN: &str = include_str!("lua/handoff_fn.lua");
/// What both kinds of worker do with their hand-off list at a claim: withdraw the registration,
/// read and empty the list; needed by `TAKE_HANDED_FN` and `TAKE_HANDED_CHAT_FN`.
const HANDED_FN: &str = include_str!("lua/handed_fn.lua");
/// The worker's side of the hand-off: what was handed to it and not yet read, taken by its next
/// claim; `claim_plain` only. Needs `CLAIM_PLAIN_FN` and `HANDED_FN` before it.
const TAKE_HANDED_FN: &str = include_str!("lua/take_handed_fn.lua");
/// A lone submit's job created already claimed for an idle worker; `submit_one` only. Needs
/// `INFLIGHT_KEEPER`, `PUSH_HANDED_FN` and `NEW_CLAIM_FN` before it.
const HANDOFF_NEW_FN: &str = include_str!("lua/handoff_new_fn.lua");

/// Claims ready non-chat jobs with their state change and lease, for a worker's fetch loop
/// (which registers as idle when it finds too few).
pub(crate) static CLAIM_PLAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH_FN}\n{}\n{CLAIM_PLAIN_FN}\n{HANDED_FN}\n{TAKE_HANDED_FN}\n{}",
        *CLAIM_FIELDS_FN,
        include_str!("lua/claim_plain.lua")
    ))
});
/// Starts a chat claim; shared by `claim_chat` and `complete_many`.
const START_CHAT_FN: &str = include_str!("lua/start_chat_fn.lua");
/// Claims current chat dispatches from the front of `ready:chat`; shared by `claim_chat` and
/// `complete_many` (a chat slot's finish-and-claim-next).
const CLAIM_CHAT_FN: &str = include_str!("lua/claim_chat_fn.lua");

/// A chat job created already started for an idle chat worker; `submit_chat` only. Needs
/// `NEW_CLAIM_FN` before it, and `add_job` and the lane store's `lane_append` at the script's
/// top.
const HANDOFF_CHAT_FN: &str = include_str!("lua/handoff_chat_fn.lua");
/// The chat worker's side of the hand-off; `claim_chat` only. Needs `HANDED_FN` before it.
const TAKE_HANDED_CHAT_FN: &str = include_str!("lua/take_handed_chat_fn.lua");

/// Claims chat dispatches that are still current, for a chat worker's fetch loop (which
/// registers as idle when it finds too few).
pub(crate) static CLAIM_CHAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH_FN}\n{}\n{START_CHAT_FN}\n{CLAIM_CHAT_FN}\n{HANDED_FN}\n{TAKE_HANDED_CHAT_FN}\n{}",
        *CLAIM_FIELDS_FN,
        include_str!("lua/claim_chat.lua")
    ))
});
/// Records an accepted outcome (used by `complete_many`).
const RECORD_OUTCOME_FN: &str = include_str!("lua/record_outcome_fn.lua");

/// Wakes idle workers blocked on a kind's wake-up list; needed by `submit_one.lua`,
/// `submit_plain.lua` and `complete_many.lua`.
const WAKE_FN: &str = include_str!("lua/wake_fn.lua");

/// The definition of `handoff_fns()`, in both submit scripts: the hand-off of the head of a ready
/// list (and the claim's functions it needs), which a submit needs only when it finds an idle
/// worker. Defined at the top, their closures would be made by every call (a script's body runs
/// afresh each call). It returns `hand_off`. `before` goes first inside it: what the hand-off
/// needs that the script does not define at its top.
fn handoff_fns(before: &str) -> String {
    format!(
        "local function handoff_fns()\n{before}\n{}\n{CLAIM_PLAIN_FN}\n{PUSH_HANDED_FN}\n{HANDOFF_FN}\n\
         return hand_off\nend",
        *CLAIM_FIELDS_FN
    )
}

/// The definition of `hand_new_fns()`, in `submit_one`: `hand_new` and only what it needs (no
/// batch or claim functions), made when a lone submit finds an idle worker and no job ready
/// ahead of its own (every submit of W3).
static HAND_NEW_FNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "local function hand_new_fns()\n{INFLIGHT_KEEPER}\n{PUSH_HANDED_FN}\n{}\n{HANDOFF_NEW_FN}\n\
         return hand_new\nend",
        *NEW_CLAIM_FN
    )
});

/// Creates one non-chat job's record and puts it on its ready list, or hands it to an idle
/// worker: a lone submit. Its own script, lighter than `SUBMIT_PLAIN`: at its top only
/// `create_job`, `add_job`, `write_job` and `wake`; the batch's functions are made inside `handoff_fns()`,
/// with the hand-off that needs them, and the creation of a job claimed for an idle worker inside
/// `hand_new_fns()`.
pub(crate) static SUBMIT_ONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\n{WAKE_FN}\n{}\n{}\n{}",
        crate::store::CREATE_FN,
        handoff_fns(BATCH_FN),
        *HAND_NEW_FNS,
        include_str!("lua/submit_one.lua")
    ))
});
/// Creates non-chat jobs' records and puts them on their ready lists, or hands them to idle
/// workers: a batch's non-chat jobs, or submits combined, in one call.
pub(crate) static SUBMIT_PLAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH_FN}\n{WAKE_FN}\n{}\n{}\n{}",
        crate::store::CREATE_FN,
        handoff_fns(""),
        include_str!("lua/submit_plain.lua")
    ))
});
/// Creates one chat job's record and puts it in its lane, all or nothing, in one call: the lane
/// store's own `lane_admit` and `lane_append` (and the helpers they need) around `create_job`.
/// A job that claims an idle lane while a chat worker is registered idle is created already
/// started for that worker by `hand_new_chat`, defined (with the generated `new_claim`) inside
/// `chat_hand_fns()`, which the script calls only when it finds one registered.
pub(crate) static SUBMIT_CHAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\n{}\n{}\nlocal function chat_hand_fns()\n{}\n{HANDOFF_CHAT_FN}\nreturn hand_new_chat\nend\n{}",
        crate::store::CREATE_FN,
        lane_store::LANE_COMMON_LUA,
        lane_store::ENQUEUE_FN,
        *NEW_CLAIM_FN,
        include_str!("lua/submit_chat.lua")
    ))
});
/// Records the outcomes of several jobs, each fenced, and hands each caller its next job.
pub(crate) static COMPLETE_MANY: LazyLock<Script> = LazyLock::new(|| {
    // The lane store's own `finish_lane` (and the helpers it needs) move a chat lane on in the
    // same script: one Lua source for both, no copy.
    Script::new(&format!(
        "{BATCH_FN}\n{WAKE_FN}\n{}\n{CLAIM_PLAIN_FN}\n{RECORD_OUTCOME_FN}\n{START_CHAT_FN}\n{CLAIM_CHAT_FN}\n{}\n{}\n{}",
        *CLAIM_FIELDS_FN,
        lane_store::LANE_COMMON_LUA,
        lane_store::FINISH_FN,
        include_str!("lua/complete_many.lua")
    ))
});
/// Counts the non-chat pending jobs that no list or lease accounts for.
pub(crate) static ORPHAN_GAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/orphan_gap.lua")));
/// Counts the pending chat jobs that no lane accounts for.
pub(crate) static CHAT_ORPHAN_GAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/chat_orphan_gap.lua")));
/// Puts a queued non-chat job on its ready list.
pub(crate) static ENQUEUE_PLAIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{STATE_FN}\n{}", include_str!("lua/enqueue_plain.lua"))));
/// Extends non-chat leases.
pub(crate) static RENEW_PLAIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/renew_plain.lua")));
/// Re-queues expired non-chat leases and releases due retries.
pub(crate) static REAP_PLAIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{STATE_FN}\n{}", include_str!("lua/reap_plain.lua"))));
