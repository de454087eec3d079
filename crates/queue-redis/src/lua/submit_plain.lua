-- Submits non-chat jobs in one call (batch_fn.lua, wake_fn.lua, job_create_fn.lua and
-- `handoff_fns`, see below, are prepended), with the effect of
-- `create_job` and a ready-list push for each, in order, but with the per-job work cut to one
-- command (HSET): one EXISTS checks every id at once (a job each only when one is taken), the
-- sequence numbers come from one INCRBY, and each kind gets one ZADD to its pending index and
-- one RPUSH to its ready list. Then, per kind, as many jobs as
-- there are idle workers registered are handed to them (hand_off, handoff_fn.lua: the head of
-- the ready list, claimed for the worker), and the rest get a wake-up with as many tokens as
-- jobs (at most 64), so that as many other idle workers wake as there is work for.
-- A job whose id is taken, by an existing record or by an earlier job of this call, gets 0 and
-- nothing is written for it; the others get consecutive sequence numbers in their order.
-- A call holds at most MAX_SUBMIT_BATCH (1,000) jobs, so each multi-member command's `unpack`
-- stays far below Lua's stack limit. A call of one job goes to submit_one.lua instead (the same
-- effect without this script's tables and functions); this script gives the same answer for one.
-- KEYS[1] seq counter
-- ARGV[1] tenant, ARGV[2] now (ms), ARGV[3] tenant prefix, ARGV[4] lease (ms) of a job handed to
--   an idle worker; then 5 per job: id, kind, lane ('' = none), request id ('' = none), payload
--   (JSON text)
-- Returns, per job, its new seq (>= 1), or 0 when its id is taken.
local prefix = ARGV[3]
-- The hand-off (`hand_off`, handoff_fn.lua, and `hand_new`, handoff_new_fn.lua) is built on first
-- use by `handoff_fns` (scripts.rs: the generated read_claim, claim_plain_fn.lua, handoff_fn.lua,
-- the generated CLAIM_NAMES and handoff_new_fn.lua inside one function, which returns the two): defined
-- at the top, their closures would be made by every call, and most calls find no idle worker.
local now, short_lease, hand_off = tonumber(ARGV[2]), tonumber(ARGV[4]), nil
-- The idle worker of `kind` registered longest whose registration has not run out, if any.
local function idle_worker(kind)
  return redis.call('ZRANGEBYSCORE', prefix .. 'idle:' .. kind, ARGV[2], '+inf', 'LIMIT', '0', '1')[1]
end
-- Hands up to `n` jobs of `kind` to idle workers, each to the one registered longest, and wakes
-- others for the rest.
local function dispatch(kind, n)
  while n > 0 do
    local worker = idle_worker(kind)
    if not worker then
      break
    end
    hand_off = hand_off or handoff_fns()
    if not hand_off(prefix, kind, now, short_lease, worker) then
      break
    end
    n = n - 1
  end
  if n > 0 then
    wake(prefix .. 'signal:' .. kind, n)
  end
end
-- out: the answer per job (0 until numbered); of each new job, its answer's position, its first
-- ARGV and its record's key (parallel lists: no table per job).
local out, fresh_at, fresh_arg, fresh_key, seen = {}, {}, {}, {}, {}
-- The records' keys, and one EXISTS for all of them (they share the tenant's hash tag, hence the
-- slot): when none is taken, the usual case, no job needs an EXISTS of its own.
local keys = {}
for i = 5, #ARGV, 5 do
  keys[#keys + 1] = prefix .. 'job:' .. ARGV[i]
end
local any_taken = #keys > 0 and redis.call('EXISTS', unpack(keys)) > 0
for i = 5, #ARGV, 5 do
  local id = ARGV[i]
  local jk = keys[#out + 1]
  out[#out + 1] = 0
  if not seen[id] and not (any_taken and redis.call('EXISTS', jk) == 1) then
    seen[id] = true
    local f = #fresh_at + 1
    fresh_at[f], fresh_arg[f], fresh_key[f] = #out, i, jk
  end
end
local fresh = #fresh_at
if fresh == 0 then
  return out
end
local seq = redis.call('INCRBY', KEYS[1], fresh) - fresh
-- Per kind, in order of first appearance: how many new jobs (the wake-up's tokens), and its
-- pending index's and ready list's keys (built once per kind, not per job).
local b, kinds, count, pending, ready = new_batch(), {}, {}, {}, {}
for f = 1, fresh do
  local i = fresh_arg[f]
  local id, kind = ARGV[i], ARGV[i + 1]
  seq = seq + 1
  out[fresh_at[f]] = seq
  local text = string.format('%d', seq)
  write_job(fresh_key[f], id, kind, ARGV[1], ARGV[i + 2], ARGV[i + 3], ARGV[2], ARGV[i + 4], text)
  if not count[kind] then
    count[kind] = 0
    kinds[#kinds + 1] = kind
    pending[kind], ready[kind] = prefix .. 'pending:' .. kind, prefix .. 'ready:' .. kind
  end
  batch_zadd(b, pending[kind], text, id)
  batch_rpush(b, ready[kind], id)
  count[kind] = count[kind] + 1
end
flush_batch(b)
for _, kind in ipairs(kinds) do
  dispatch(kind, count[kind])
end
return out
