-- enqueue: appends a job to a lane; an idle lane claims it at once.
-- KEYS: 1 lanes, 2 leases, 3 epoch, 4 lane active, 5 lane waiting, 6 chat ready, 7 chat signal,
--       8 the job's record hash (same tenant, same slot)
-- ARGV: 1 job, 2 lane, 3 lease deadline (ms), 4 max_queue, 5 dispatch ('1' or '0')
-- Returns {outcome, position, size[, epoch]}: 'running' or 'waiting' (already in the lane:
-- nothing changed), 'queued', 'claimed' (with the new epoch); {'finished', 0, size} (the job's
-- record is already finished: a recovery sweep that read it as pending just before it finished
-- must not put it back); or {'full'} (nothing changed).
local job, lane = ARGV[1], ARGV[2]
local active_job = redis.call('HGET', KEYS[4], 'job')
local waiting = redis.call('LLEN', KEYS[5])
if active_job == job then
  return {'running', 0, waiting + 1}
end
local at = active_job and redis.call('LPOS', KEYS[5], job)
if at then
  return {'waiting', at + 1, waiting + 1}
end
local status = redis.call('HGET', KEYS[8], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then
  return {'finished', 0, waiting + (active_job and 1 or 0)}
end
if active_job then
  if waiting >= tonumber(ARGV[4]) then
    return {'full'}
  end
  redis.call('RPUSH', KEYS[5], job)
  return {'queued', waiting + 1, waiting + 2}
end
-- No active claim means an idle lane: every script keeps "waiting jobs imply an active claim".
local epoch = claim(KEYS[4], KEYS[2], KEYS[3], job, lane, ARGV[3])
redis.call('ZADD', KEYS[1], 0, lane)
push_dispatch(ARGV[5], KEYS[6], KEYS[7], epoch, job, lane)
return {'claimed', 0, waiting + 1, epoch}
