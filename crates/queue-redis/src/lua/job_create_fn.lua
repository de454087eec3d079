-- create_job(K, A): creates one job record: refuses an existing id, assigns the next sequence
-- number and indexes the job as pending. No counter: a kind's queued count is derived (its
-- pending index less its `processing` counter).
-- K[1] job hash, K[2] seq counter, K[3] pending zset of the job's kind
-- A[1] id, A[2] kind, A[3] tenant, A[4] lane ('' = none), A[5] request id ('' = none),
--   A[6] now (ms), A[7] payload (JSON text)
-- Returns the new seq (>= 1), or 0 when the id is taken (nothing written).
local function create_job(K, A)
  if redis.call('EXISTS', K[1]) == 1 then
    return 0
  end
  local id = A[1]
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
  return seq
end
