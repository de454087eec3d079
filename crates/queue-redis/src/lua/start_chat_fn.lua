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
-- `fenced`: the caller has not checked that the claim is current (a dispatch from ready:chat,
-- claim_chat_fn.lua), and it is checked here: stale when the record's epoch is above the claim's
-- (the reaper re-claimed the job since), and, for a record neither `queued` nor `processing`,
-- unless the lane's active claim names the job under the epoch (one read, on that rare path).
-- Returns {'run', epoch, lane, deadline, record as `read_claim` gives it (the values of
-- CLAIM_FIELDS, store.rs, in its order), after the start}, or
-- {'finish', epoch, lane, deadline, job} for a claim whose job is already finished or gone (the
-- lane must move on), or, with `fenced`, nil for a stale claim.
-- Appends `start_chat` answers to the flat array `reply` after its position `k`, in the array
-- itself (Redis converts every table of a reply by looking up seven special fields in it first):
-- for each, its verb, epoch, lane and deadline, then a `run`'s CLAIM_COUNT record values or a
-- `finish`'s job. Returns the new last position.
local function append_chat_answers(reply, k, answers)
  for _, a in ipairs(answers) do
    reply[k + 1], reply[k + 2], reply[k + 3], reply[k + 4] = a[1], a[2], a[3], a[4]
    k = k + 4
    if a[1] == 'run' then
      local h = a[5]
      for j = 1, CLAIM_COUNT do
        reply[k + j] = h[j]
      end
      k = k + CLAIM_COUNT
    else
      k = k + 1
      reply[k] = a[5]
    end
  end
  return k
end

local function start_chat(b, prefix, stats, leases, job, epoch, lane, now, ttl, old_deadline, lease_set, fenced)
  local jk = prefix .. 'job:' .. job
  -- One read serves the check and the answer: the state the start writes is patched in it.
  local h = read_claim(jk, job)
  local st, at, attempt = state_parts(h[CLAIM_STATE])
  -- Epochs are decimal text without leading zeros: the longer is the larger.
  if fenced and at and (#at > #epoch or (#at == #epoch and at > epoch)) then
    return nil
  end
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
  if fenced then
    local active = redis.call('HMGET', prefix .. 'lane:' .. lane .. ':active', 'job', 'epoch')
    if active[1] ~= job or active[2] ~= epoch then
      return nil
    end
  end
  return { 'finish', epoch, lane, old_deadline, job }
end
