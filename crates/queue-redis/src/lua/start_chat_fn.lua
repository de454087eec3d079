-- Shared by claim_chat.lua and complete_many.lua: starts a chat claim (`job` under `epoch`,
-- the lane's current claim): the record moves to `processing` under the claim's epoch and the
-- lease restarts (hash and lease index), so the reaper cannot hand out a job a worker has just
-- started. prefix: the tenant's key prefix; stats, leases: keys; ttl: the claim TTL (ms).
-- Returns {'run', epoch, lane, deadline, HGETALL of the job}, or {'finish', epoch, lane,
-- deadline, job} for a claim whose job is already finished or gone (the lane must move on).
local function start_chat(prefix, stats, leases, job, epoch, lane, now, ttl, old_deadline)
  local ak = prefix .. 'lane:' .. lane .. ':active'
  local jk = prefix .. 'job:' .. job
  local st = redis.call('HGET', jk, 'status')
  if st == 'queued' or st == 'processing' then
    if st == 'queued' then
      redis.call('HINCRBY', stats, 'count:chat:processing', 1)
    end
    redis.call('HSET', jk, 'status', 'processing', 'epoch', epoch, 'updated', now)
    redis.call('HINCRBY', jk, 'attempt', 1)
    local deadline = now + ttl
    redis.call('HSET', ak, 'deadline', deadline)
    redis.call('ZADD', leases, deadline, lane)
    return { 'run', tostring(epoch), lane, tostring(deadline), redis.call('HGETALL', jk) }
  end
  return { 'finish', tostring(epoch), lane, old_deadline, job }
end
