-- reset: drops up to `batch` lanes of the tenant (call until it returns 0).
-- KEYS: 1 lanes, 2 leases, 3 recent lanes
-- ARGV: 1 lane key prefix ('lw:{tenant}:lane:'), 2 batch
-- Returns how many lanes it dropped.
local batch = tonumber(ARGV[2])
local dropped = 0
-- Lane keys are built from the tenant prefix (same hash tag, same slot): known only from the sets.
for _, lane in ipairs(redis.call('ZRANGE', KEYS[1], 0, batch - 1)) do
  redis.call('DEL', ARGV[1] .. lane .. ':active', ARGV[1] .. lane .. ':q', ARGV[1] .. lane .. ':recent')
  redis.call('ZREM', KEYS[2], lane)
  redis.call('ZREM', KEYS[1], lane)
  dropped = dropped + 1
end
for _, lane in ipairs(redis.call('ZRANGE', KEYS[3], 0, batch - 1)) do
  redis.call('DEL', ARGV[1] .. lane .. ':recent')
  redis.call('ZREM', KEYS[3], lane)
  dropped = dropped + 1
end
return dropped
