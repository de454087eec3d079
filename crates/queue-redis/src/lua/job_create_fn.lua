-- create_job(K, A): creates one job record: refuses an existing id, assigns the next sequence
-- number, indexes the job as pending and counts it as queued.
-- K[1] job hash, K[2] seq counter, K[3] pending zset of the job's kind, K[4] stats hash,
--   K[5] finished zset, K[6] finished-meta hash (finished id -> "<kind>:<status>")
-- A[1] id, A[2] kind, A[3] tenant, A[4] lane ('' = none), A[5] request id ('' = none),
--   A[6] now (ms), A[7] payload (JSON text)
-- Returns the new seq (>= 1), or 0 when the id is taken (nothing written).
local function create_job(K, A)
  if redis.call('EXISTS', K[1]) == 1 then
    return 0
  end
  local id = A[1]
  -- A finished record of the same id whose hash expired by TTL may still be indexed: settle its
  -- counter first, so the new record does not inherit it.
  local stale = redis.call('HGET', K[6], id)
  if stale then
    if redis.call('HINCRBY', K[4], 'count:' .. stale, -1) <= 0 then
      redis.call('HDEL', K[4], 'count:' .. stale)
    end
    redis.call('HDEL', K[6], id)
    redis.call('ZREM', K[5], id)
  end
  local seq = redis.call('INCR', K[2])
  local fields = {'id', id, 'tenant', A[3], 'kind', A[2], 'status', 'queued', 'attempt', 0,
    'epoch', 0, 'seq', seq, 'created', A[6], 'updated', A[6], 'payload', A[7]}
  if A[4] ~= '' then
    fields[#fields + 1] = 'lane'
    fields[#fields + 1] = A[4]
  end
  if A[5] ~= '' then
    fields[#fields + 1] = 'request_id'
    fields[#fields + 1] = A[5]
  end
  redis.call('HSET', K[1], unpack(fields))
  redis.call('ZADD', K[3], seq, id)
  redis.call('HINCRBY', K[4], 'count:' .. A[2] .. ':queued', 1)
  return seq
end
