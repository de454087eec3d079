-- snapshot: one page of lanes in lane-id order, each with its claim and waiting jobs.
-- KEYS: 1 lanes
-- ARGV: 1 lower bound for ZRANGEBYLEX ('-' or '(' .. lane), 2 limit,
--       3 lane key prefix ('lw:{tenant}:lane:')
-- Returns {{lane, job or '', epoch or '0', deadline or '0', {waiting...}}, ...}.
local lanes = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, ARGV[2])
local out = {}
for _, lane in ipairs(lanes) do
  -- Built from the tenant prefix (same hash tag, same slot): the lanes are only known here.
  local active = redis.call('HMGET', ARGV[3] .. lane .. ':active', 'job', 'epoch', 'deadline')
  local waiting = redis.call('LRANGE', ARGV[3] .. lane .. ':q', 0, -1)
  out[#out + 1] = {lane, active[1] or '', active[2] or '0', active[3] or '0', waiting}
end
return out
