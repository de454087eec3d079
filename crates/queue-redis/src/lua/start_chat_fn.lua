-- Shared by claim_chat.lua and complete_many.lua: starts a chat claim (`job` under `epoch`,
-- the lane's current claim): the record moves to `processing` under the claim's epoch and the
-- lease restarts (hash and lease index), so the reaper cannot hand out a job a worker has just
-- started. It is left as it is when `lease_set` (the caller has just claimed the lane with this
-- lease), or when at least nine tenths of `ttl` are still left of it (`old_deadline`): a
-- dispatch that waited a moment starts with almost a whole lease, and the worker's heartbeat
-- (a fraction of the lease) renews it long before it ends.
-- b: the batch (batch_fn.lua) that gathers the `processing` counter and the lease index (the
-- caller flushes it); prefix: the tenant's key prefix; stats, leases: keys; ttl: the claim TTL
-- (ms).
-- Returns {'run', epoch, lane, deadline, record as `read_claim` gives it (the values of
-- CLAIM_FIELDS, store.rs, in its order), after the start}, or
-- {'finish', epoch, lane, deadline, job} for a claim whose job is already finished or gone (the
-- lane must move on).
local function start_chat(b, prefix, stats, leases, job, epoch, lane, now, ttl, old_deadline, lease_set)
  local jk = prefix .. 'job:' .. job
  -- One read serves the check and the answer: the state the start writes is patched in it.
  local h = read_claim(jk)
  local st, _, attempt = state_parts(h[CLAIM_STATE])
  if st == 'queued' or st == 'processing' then
    if st == 'queued' then
      batch_incr(b, stats, 'count:chat:processing', 1)
    end
    local state = 'processing|' .. epoch .. '|' .. successor(attempt) .. '|' .. decimal(now)
    redis.call('HSET', jk, 'state', state)
    h[CLAIM_STATE] = state
    local left = tonumber(old_deadline)
    local keep = left and (lease_set or (left - now) * 10 >= ttl * 9)
    local deadline = keep and old_deadline or decimal(now + ttl)
    if not (keep or lease_set) then
      redis.call('HSET', prefix .. 'lane:' .. lane .. ':active', 'deadline', deadline)
      batch_zadd(b, leases, deadline, lane)
    end
    return { 'run', epoch, lane, deadline, h }
  end
  return { 'finish', epoch, lane, old_deadline, job }
end
