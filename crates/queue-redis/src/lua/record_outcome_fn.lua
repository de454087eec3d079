-- Used by complete_many.lua: records an accepted (already fenced) outcome.
-- jk job hash, inflight, pending (pending:<kind>), finished, stats, delayed, meta
-- (finished:meta), id, outcome (done | failed | retry), value (result JSON or error), now,
-- retention (ms), due (ms, a non-chat retry), kind.
local function record_outcome(jk, inflight, pending, finished, stats, delayed, meta, id, outcome,
                              value, now, retention, due, kind)
  redis.call('ZREM', inflight, id)
  redis.call('HINCRBY', stats, 'count:' .. kind .. ':processing', -1)
  if outcome == 'retry' then
    redis.call('HSET', jk, 'status', 'queued', 'error', value, 'updated', now)
    redis.call('HINCRBY', stats, 'count:' .. kind .. ':queued', 1)
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
  redis.call('HINCRBY', stats, 'count:' .. kind .. ':' .. outcome, 1)
  redis.call('ZREM', pending, id)
  redis.call('ZADD', finished, now, id)
  redis.call('HSET', meta, id, kind .. ':' .. outcome)
  redis.call('PEXPIRE', jk, retention)
end
