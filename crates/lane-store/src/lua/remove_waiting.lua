-- remove_waiting: removes a waiting (not running) job from its lane: a cancel.
-- KEYS: 1 lanes, 2 leases, 3 lane active, 4 lane waiting
-- ARGV: 1 job, 2 lane
-- Returns 1 when the job was waiting, else 0.
if redis.call('LREM', KEYS[4], 1, ARGV[1]) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
