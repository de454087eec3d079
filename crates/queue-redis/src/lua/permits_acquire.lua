-- Takes one permit of every given class for one token, or none at all.
-- KEYS[i] the permits ZSET (token -> lease deadline, ms) of the i-th class, in acquisition order
-- ARGV[1] now (ms), ARGV[2] the new lease's deadline (ms), ARGV[3] token, ARGV[3 + i] capacity
--   of the i-th class
-- Returns 0 when every permit was taken, else the 1-based index of the first full class (then
-- nothing was taken).
for _, key in ipairs(KEYS) do
  -- Leases that were not renewed in time (their holder died) vanish first.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
end
for i, key in ipairs(KEYS) do
  if not redis.call('ZSCORE', key, ARGV[3]) and redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
end
return 0
