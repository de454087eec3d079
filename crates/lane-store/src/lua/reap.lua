-- reap: re-claims the head job of up to `limit` lanes whose lease has expired (deadline <= now).
-- KEYS: 1 leases, 2 epoch, 3 chat ready, 4 chat signal
-- ARGV: 1 now (ms), 2 new lease deadline (ms, > now), 3 lane key prefix ('lw:{tenant}:lane:'),
--       4 limit, 5 dispatch
-- Returns {scanned, lane1, job1, epoch1, lane2, ...}; scanned < limit means none is left.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
local out = {#expired}
for _, lane in ipairs(expired) do
  -- The lane is only known here, so its key is built from the tenant prefix passed in ARGV: it
  -- carries the tenant's hash tag, hence the same Cluster slot as every key in KEYS.
  local active = ARGV[3] .. lane .. ':active'
  local job = redis.call('HGET', active, 'job')
  if job then
    local epoch = claim(active, KEYS[1], KEYS[2], job, lane, ARGV[2])
    push_dispatch(ARGV[5], KEYS[3], KEYS[4], epoch, job, lane)
    out[#out + 1] = lane
    out[#out + 1] = job
    out[#out + 1] = epoch
  else
    -- A lease without a claim cannot arise; if one did, it must not be returned again and again.
    redis.call('ZREM', KEYS[1], lane)
  end
end
return out
