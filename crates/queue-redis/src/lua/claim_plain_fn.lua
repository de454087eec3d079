-- Shared by claim_plain.lua and complete_many.lua: claims up to n ready jobs of one non-chat kind,
-- atomically with their state change and lease, so a job is never held by nobody: it is in the
-- ready list, or in `inflight` under a lease. Job hashes are built from the tenant prefix: they
-- share the tenant's hash tag, hence the slot. Returns an array of HGETALL replies.
local function claim_plain(ready, inflight, stats, n, now, lease, prefix, kind)
  local out = {}
  local deadline = now + lease
  while #out < n do
    local id = redis.call('LPOP', ready)
    if not id then break end
    local jk = prefix .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'status', 'epoch', 'attempt')
    local st = f[1]
    local live = st == 'processing' and redis.call('ZSCORE', inflight, id)
    -- A duplicate entry of a job that a live worker holds, or of a finished job, is dropped.
    if st == 'queued' or (st == 'processing' and (not live or tonumber(live) <= now)) then
      redis.call('HSET', jk, 'status', 'processing', 'updated', now,
        'epoch', (tonumber(f[2]) or 0) + 1, 'attempt', (tonumber(f[3]) or 0) + 1)
      if st == 'queued' then
        redis.call('HINCRBY', stats, 'count:' .. kind .. ':queued', -1)
        redis.call('HINCRBY', stats, 'count:' .. kind .. ':processing', 1)
      end
      redis.call('ZADD', inflight, deadline, id)
      out[#out + 1] = redis.call('HGETALL', jk)
    end
  end
  return out
end
