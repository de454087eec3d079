-- Used by complete_many.lua: records an accepted (already fenced) outcome.
-- b the batch (batch_fn.lua) that gathers the writes to set-wide keys, jk job hash, inflight,
-- names (the kind's: `pending`, its pending index; `processing`, its stats counter; `finished`,
-- its finished index per final outcome), stats, delayed, id, epoch and attempt (text: the
-- fenced state's, which the outcome keeps), outcome (done | failed | retry), value (result JSON
-- or error), now (text), due (ms, a non-chat retry), kind.
-- A finished job leaves its pending index for `finished:<kind>:<outcome>`, whose size is the
-- count of that state: no counter to keep. A chat job is in no `inflight` index (its lane's claim
-- holds the lease).
-- The finished record gets no TTL: the backend's retention loop (`purge_finished`, every
-- `purge_interval` in every process of the tenant) deletes it with its index entry once it
-- is older than the retention period, as it must for the entry anyway. A TTL would cost every
-- job a PEXPIRE (and an entry in Redis's expires table) to do what the purge does.
local function record_outcome(b, jk, inflight, names, stats, delayed, id, epoch, attempt, outcome, value, now, due,
                              kind)
  if kind ~= 'chat' then
    batch_zrem(b, inflight, id)
  end
  batch_incr(b, stats, names.processing, -1)
  if outcome == 'retry' then
    redis.call('HSET', jk, 'state', 'queued|' .. epoch .. '|' .. attempt .. '|' .. now, 'error', value)
    if kind ~= 'chat' then
      redis.call('ZADD', delayed, due, kind .. '|' .. id)
    end
    return
  end
  if outcome == 'done' then
    redis.call('HSET', jk, 'state', 'done|' .. epoch .. '|' .. attempt .. '|' .. now, 'result', value)
  else
    redis.call('HSET', jk, 'state', 'failed|' .. epoch .. '|' .. attempt .. '|' .. now, 'error', value)
  end
  batch_zrem(b, names.pending, id)
  batch_zadd(b, names.finished[outcome], now, id)
end
