-- write_job(jk, ...): writes the hash `jk` of a new job record and returns its `fixed` field.
-- Numbers go in as text (`seq` too): Redis would format a Lua number with a float format, at a
-- cost. What its claims and ends change (status, epoch, attempt, updated) is one field, `state`
-- (state_fn.lua). What a job never changes but its payload (seq, created, lane, request id) is one field,
-- `fixed` = `<seq>|<created>|<lane>|<request_id>` (lane and request id '' when unset; no id
-- contains '|'): a claim reads it with one of its `HMGET`'s fields where it read four, two of
-- them usually absent (an absent field costs `HMGET` a scan of the whole record), and a new
-- record is one `HSET` of six fields, each a `realloc` of the hash's listpack. The payload keeps
-- a field of its own, so that a payload of up to `hash-max-listpack-value` (64 bytes by default)
-- still leaves the record a listpack. Records written before `fixed` (its four parts apart) are
-- still read: `read_claim` (scripts.rs) and `build_record` (store.rs) fall back to them.
-- Shared by `add_job` below and the batched `submit_plain.lua`; `hand_new`
-- (handoff_new_fn.lua) and `hand_new_chat` (handoff_chat_fn.lua) pass `epoch` (text) through
-- `create_job` or `add_job`: the record as a start of the new job under
-- that epoch leaves it, `processing`, attempt 1 (epoch 1 for a non-chat job's first claim, the
-- lane claim's epoch for a chat job).
local function write_job(jk, id, kind, tenant, lane, request_id, now, payload, seq, epoch)
  local state = 'queued|0|0|' .. now
  if epoch then
    state = 'processing|' .. epoch .. '|1|' .. now
  end
  local fixed = seq .. '|' .. now .. '|' .. lane .. '|' .. request_id
  -- In the order of how often the hot path looks a field up (a listpack finds a field by a scan
  -- from its head): `state` at every claim, end and fence, the rest once per claim or not at
  -- all.
  redis.call('HSET', jk, 'state', state, 'id', id, 'fixed', fixed, 'payload', payload, 'kind', kind,
    'tenant', tenant)
  return fixed
end

-- create_job(K, A, epoch) (job_create.lua, submit_one.lua and `hand_new`, handoff_new_fn.lua):
-- creates one job record: refuses an existing id, then `add_job`. No counter: a kind's queued count is derived (its pending index
-- less its `processing` counter).
-- K[1] job hash, K[2] seq counter, K[3] pending zset of the job's kind
-- A[1] id, A[2] kind, A[3] tenant, A[4] lane ('' = none), A[5] request id ('' = none),
--   A[6] now (ms), A[7] payload (JSON text)
-- epoch: nil for a queued job, or the epoch (text) of a job created already started (write_job).
-- Returns the new seq (>= 1), its text and the record's `fixed` field, or 0 when the id is taken
-- (nothing written).
-- add_job(K, A, epoch): what `create_job` writes once the id is known to be free: assigns the next
-- sequence number, writes the record and indexes the job as pending; returns the seq, its text
-- and the record's `fixed` field. submit_chat.lua checks the id itself, before its lane checks
-- (and before its `hand_new_chat`, handoff_chat_fn.lua, claims the lane whose epoch the record is
-- written under).
local function add_job(K, A, epoch)
  local seq = redis.call('INCR', K[2])
  local text = string.format('%d', seq)
  local fixed = write_job(K[1], A[1], A[2], A[3], A[4], A[5], A[6], A[7], text, epoch)
  redis.call('ZADD', K[3], text, A[1])
  return seq, text, fixed
end

local function create_job(K, A, epoch)
  if redis.call('EXISTS', K[1]) == 1 then
    return 0
  end
  return add_job(K, A, epoch)
end
