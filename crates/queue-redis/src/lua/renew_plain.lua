-- Extends the leases of non-chat jobs a worker still holds (missing ones were reaped).
-- KEYS[1] inflight  ARGV[1] new deadline (ms)  ARGV[2..] job ids
-- Returns how many leases were extended.
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
return n
