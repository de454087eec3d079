-- Used by complete_many.lua: records an accepted (already fenced) outcome.
-- jk job hash, inflight, pending (pending:<kind>), stats, delayed, prefix (the tenant's key
-- prefix), id, outcome (done | failed | retry), value (result JSON or error), now, retention
-- (ms), due (ms, a non-chat retry), kind.
-- A finished job leaves its pending index for `finished:<kind>:<outcome>`, whose size is the
-- count of that state: no counter to keep. A chat job is in no `inflight` index (its lane's claim
-- holds the lease).
local function record_outcome(jk, inflight, pending, stats, delayed, prefix, id, outcome, value,
                              now, retention, due, kind)
  if kind ~= 'chat' then
    redis.call('ZREM', inflight, id)
  end
  redis.call('HINCRBY', stats, 'count:' .. kind .. ':processing', -1)
  if outcome == 'retry' then
    redis.call('HSET', jk, 'status', 'queued', 'error', value, 'updated', now)
    if kind ~= 'chat' then
      redis.call('ZADD', delayed, due, kind .. '|' .. id)
    end
    return
  end
  if outcome == 'done' then
    redis.call('HSET', jk, 'status', 'done', 'result', value, 'updated', now)
  else
    redis.call('HSET', jk, 'status', 'failed', 'error', value, 'updated', now)
  end
  redis.call('ZREM', pending, id)
  redis.call('ZADD', prefix .. 'finished:' .. kind .. ':' .. outcome, now, id)
  redis.call('PEXPIRE', jk, retention)
end
