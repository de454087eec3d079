-- finish: ends the lane's current claim and claims the next waiting job, if any.
-- KEYS: 1 lanes, 2 leases, 3 epoch, 4 lane active, 5 lane waiting, 6 chat ready, 7 chat signal
-- ARGV: 1 job, 2 epoch, 3 lane, 4 lease deadline of the next claim (ms), 5 dispatch
-- Returns {'next', job, epoch}, {'idle'} (the lane's keys are gone) or {'stale', current epoch}.
local lane = ARGV[3]
local current = stale(KEYS[4], ARGV[1], ARGV[2])
if current then
  return {'stale', current}
end
local next_job = redis.call('LPOP', KEYS[5])
if next_job then
  local epoch = claim(KEYS[4], KEYS[2], KEYS[3], next_job, lane, ARGV[4])
  push_dispatch(ARGV[5], KEYS[6], KEYS[7], epoch, next_job, lane)
  return {'next', next_job, epoch}
end
-- Idle now: leave nothing behind (LPOP of the last element already removed the list).
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[2], lane)
redis.call('ZREM', KEYS[1], lane)
return {'idle'}
