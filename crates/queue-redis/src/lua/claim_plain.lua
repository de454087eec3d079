-- Claims up to N ready jobs of one non-chat kind, atomically with their state change, so that a
-- job is never held by nobody: it is in the ready list, or in `inflight` under a lease.
-- KEYS[1] ready:<kind>  KEYS[2] inflight  KEYS[3] stats
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] lease (ms)  ARGV[4] tenant prefix  ARGV[5] kind
-- Job hashes are built from the prefix: they share the tenant's hash tag, hence the slot.
-- Returns an array of HGETALL replies, one per claimed job.
local out = {}
local n = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local deadline = now + tonumber(ARGV[3])
while #out < n do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local jk = ARGV[4] .. 'job:' .. id
  local st = redis.call('HGET', jk, 'status')
  local live = redis.call('ZSCORE', KEYS[2], id)
  -- A duplicate entry of a job that a live worker holds, or of a finished job, is dropped.
  if st == 'queued' or (st == 'processing' and (not live or tonumber(live) <= now)) then
    redis.call('HINCRBY', jk, 'epoch', 1)
    redis.call('HINCRBY', jk, 'attempt', 1)
    redis.call('HSET', jk, 'status', 'processing', 'updated', ARGV[2])
    if st == 'queued' then
      redis.call('HINCRBY', KEYS[3], 'count:' .. ARGV[5] .. ':queued', -1)
      redis.call('HINCRBY', KEYS[3], 'count:' .. ARGV[5] .. ':processing', 1)
    end
    redis.call('ZADD', KEYS[2], deadline, id)
    out[#out + 1] = redis.call('HGETALL', jk)
  end
end
return out
