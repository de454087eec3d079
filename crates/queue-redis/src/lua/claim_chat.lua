-- Claims up to N chat dispatches (`epoch|job|lane`, pushed by the lane store's scripts). A
-- dispatch is current only while the lane's active claim still names that job and epoch; stale
-- ones are dropped. The job record moves to `processing` under the claim's epoch.
-- KEYS[1] ready:chat  KEYS[2] stats  KEYS[3] leases
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] tenant prefix  ARGV[4] claim TTL (ms)
-- A dispatch may have waited in the ready list for most of its lease; running it restarts the
-- lease (hash and lease index), so the reaper cannot hand out a job a worker has just started.
-- Returns an array of {verb, epoch, lane, deadline, record-or-job}: verb `run` carries the
-- HGETALL of the job; verb `finish` carries the job id of a claim whose job is already finished
-- or gone (the lane must move on).
local out = {}
local n = tonumber(ARGV[1])
while #out < n do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then break end
  local epoch, job, lane = string.match(entry, '^(%d+)|([^|]+)|(.+)$')
  if epoch then
    local ak = ARGV[3] .. 'lane:' .. lane .. ':active'
    local active = redis.call('HMGET', ak, 'job', 'epoch', 'deadline')
    if active[1] == job and active[2] == epoch then
      local jk = ARGV[3] .. 'job:' .. job
      local st = redis.call('HGET', jk, 'status')
      if st == 'queued' or st == 'processing' then
        if st == 'queued' then
          redis.call('HINCRBY', KEYS[2], 'count:chat:queued', -1)
          redis.call('HINCRBY', KEYS[2], 'count:chat:processing', 1)
        end
        redis.call('HSET', jk, 'status', 'processing', 'epoch', epoch, 'updated', ARGV[2])
        redis.call('HINCRBY', jk, 'attempt', 1)
        local deadline = tonumber(ARGV[2]) + tonumber(ARGV[4])
        redis.call('HSET', ak, 'deadline', deadline)
        redis.call('ZADD', KEYS[3], deadline, lane)
        out[#out + 1] = { 'run', epoch, lane, tostring(deadline), redis.call('HGETALL', jk) }
      else
        out[#out + 1] = { 'finish', epoch, lane, active[3], job }
      end
    end
  end
end
return out
