-- renew: extends the lease of the lane's current claim.
-- KEYS: 1 leases, 2 lane active
-- ARGV: 1 job, 2 epoch, 3 lane, 4 new lease deadline (ms)
-- Returns {'ok', deadline} or {'stale', current epoch}.
local current = stale(KEYS[2], ARGV[1], ARGV[2])
if current then
  return {'stale', current}
end
redis.call('HSET', KEYS[2], 'deadline', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return {'ok', ARGV[4]}
