-- Deletes one batch of finished records that finished strictly before a cut-off.
-- KEYS[1] finished zset, KEYS[2] stats hash, KEYS[3] finished-meta hash
-- ARGV[1] cut-off (ms, exclusive), ARGV[2] batch size, ARGV[3] prefix of job hash keys
--   (`lw:{tenant}:job:`). The job hashes are named from the finished ids, so they cannot be
--   passed in KEYS; they carry the same hash tag as KEYS, so they live in the same Cluster slot.
-- Returns { records deleted, finished entries examined }; fewer examined than the batch size
-- means the backlog is empty.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local purged = 0
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local cur = redis.call('HMGET', key, 'kind', 'status')
  local counter = nil
  if cur[2] == 'done' or cur[2] == 'failed' or cur[2] == 'cancelled' then
    redis.call('DEL', key)
    purged = purged + 1
    counter = 'count:' .. cur[1] .. ':' .. cur[2]
  else
    -- The hash expired by TTL already: settle the counter it left behind.
    local meta = redis.call('HGET', KEYS[3], id)
    if meta then
      counter = 'count:' .. meta
    end
  end
  if counter and redis.call('HINCRBY', KEYS[2], counter, -1) <= 0 then
    redis.call('HDEL', KEYS[2], counter)
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
end
return { purged, #ids }
