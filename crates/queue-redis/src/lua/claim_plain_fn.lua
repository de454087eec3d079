-- Shared by claim_plain.lua and complete_many.lua: claims up to n ready jobs of one non-chat kind,
-- atomically with their state change and lease, so a job is never held by nobody: it is in the
-- ready list, or in `inflight` under a lease. Job hashes are built from the tenant prefix: they
-- share the tenant's hash tag, hence the slot. Returns an array of records as HGETALL replies
-- (field, value, ...), as they stand after the claim.
local function claim_plain(ready, inflight, stats, n, now, lease, prefix, kind)
  local out = {}
  local deadline = now + lease
  while #out < n do
    local id = redis.call('LPOP', ready)
    if not id then break end
    local jk = prefix .. 'job:' .. id
    -- One read serves the checks and the answer: the fields the claim changes are patched in
    -- the reply (positions of status, epoch, attempt, updated).
    local h = redis.call('HGETALL', jk)
    local at = start_fields(h)
    local st = at.status and h[at.status]
    local live = st == 'processing' and redis.call('ZSCORE', inflight, id)
    -- A duplicate entry of a job that a live worker holds, or of a finished job, is dropped.
    if at.epoch and at.attempt and at.updated
      and (st == 'queued' or (st == 'processing' and (not live or tonumber(live) <= now))) then
      local epoch = tostring((tonumber(h[at.epoch]) or 0) + 1)
      local attempt = tostring((tonumber(h[at.attempt]) or 0) + 1)
      local updated = string.format('%d', now)
      redis.call('HSET', jk, 'status', 'processing', 'updated', updated, 'epoch', epoch, 'attempt', attempt)
      if st == 'queued' then
        redis.call('HINCRBY', stats, 'count:' .. kind .. ':processing', 1)
      end
      redis.call('ZADD', inflight, deadline, id)
      h[at.status], h[at.epoch], h[at.attempt], h[at.updated] = 'processing', epoch, attempt, updated
      out[#out + 1] = h
    end
  end
  return out
end
