-- Creates one job record: refuses an existing id, assigns the next sequence number, indexes the
-- job as pending and counts it as queued.
-- KEYS[1] job hash, KEYS[2] seq counter, KEYS[3] pending zset of the job's kind, KEYS[4] stats
--   hash, KEYS[5] finished zset, KEYS[6] finished-meta hash (finished id -> "<kind>:<status>")
-- ARGV[1] id, ARGV[2] kind, ARGV[3] tenant, ARGV[4] lane ('' = none), ARGV[5] request id
--   ('' = none), ARGV[6] now (ms), ARGV[7] payload (JSON text)
-- Returns the new seq (>= 1), or 0 when the id is taken (nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local id = ARGV[1]
-- A finished record of the same id whose hash expired by TTL may still be indexed: settle its
-- counter first, so the new record does not inherit it.
local stale = redis.call('HGET', KEYS[6], id)
if stale then
  if redis.call('HINCRBY', KEYS[4], 'count:' .. stale, -1) <= 0 then
    redis.call('HDEL', KEYS[4], 'count:' .. stale)
  end
  redis.call('HDEL', KEYS[6], id)
  redis.call('ZREM', KEYS[5], id)
end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'id', id, 'tenant', ARGV[3], 'kind', ARGV[2], 'status', 'queued',
  'attempt', 0, 'epoch', 0, 'seq', seq, 'created', ARGV[6], 'updated', ARGV[6], 'payload', ARGV[7])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'lane', ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'request_id', ARGV[5])
end
redis.call('ZADD', KEYS[3], seq, id)
redis.call('HINCRBY', KEYS[4], 'count:' .. ARGV[2] .. ':queued', 1)
return seq
