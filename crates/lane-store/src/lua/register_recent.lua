-- register_recent: remembers that a fingerprint was last submitted to a lane as a job.
-- KEYS: 1 lane recent (HASH fingerprint -> 'job|registered_ms'), 2 recent lanes (ZSET lane ->
--       window end, so that reset can find lanes that hold fingerprints but no job)
-- ARGV: 1 fingerprint, 2 job, 3 now (ms), 4 debounce_ms, 5 lane, 6 window end (now + debounce)
-- Returns 1.
local now, debounce = tonumber(ARGV[3]), tonumber(ARGV[4])
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
-- The hash goes when its newest window ends, so an idle lane leaves no key behind.
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if added == 1 and redis.call('HLEN', KEYS[1]) % 64 == 0 then
  -- A lane that never falls idle keeps its hash alive: sweep fingerprints whose window is over
  -- every 64 new ones, so the hash stays bounded by the live window.
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    local at = tonumber(string.match(entries[i + 1], '|(%d+)$'))
    if at and now - at >= debounce then
      redis.call('HDEL', KEYS[1], entries[i])
    end
  end
end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
-- Lanes whose window is over need no reset any more.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
