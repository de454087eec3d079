-- Deletes one job record with its index entries and its counter.
-- KEYS[1] job hash, KEYS[2] stats hash, KEYS[3] finished zset, KEYS[4] finished-meta hash,
--   KEYS[5..8] pending zsets of the kinds named in ARGV[2..5], in that order
-- ARGV[1] id, ARGV[2..5] kind names
-- Returns 1 when a record was deleted, 0 when there was none.
local id = ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'kind', 'status')
local meta = redis.call('HGET', KEYS[4], id)
local counter = nil
if cur[1] and cur[2] then
  counter = 'count:' .. cur[1] .. ':' .. cur[2]
elseif meta then
  -- The hash expired by TTL but was still indexed as finished.
  counter = 'count:' .. meta
end
if counter and redis.call('HINCRBY', KEYS[2], counter, -1) <= 0 then
  redis.call('HDEL', KEYS[2], counter)
end
for i = 2, 5 do
  if ARGV[i] == cur[1] then
    redis.call('ZREM', KEYS[i + 3], id)
  end
end
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
return redis.call('DEL', KEYS[1])
