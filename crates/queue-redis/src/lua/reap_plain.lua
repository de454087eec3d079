-- Returns non-chat jobs whose worker lease expired to their ready list (the next claim takes them
-- over under a new epoch, fencing the old worker), and moves retries whose backoff is over
-- (state_fn.lua is prepended).
-- KEYS[1] inflight  KEYS[2] delayed  KEYS[3] stats
-- ARGV[1] now (ms)  ARGV[2] tenant prefix  ARGV[3] limit
-- Returns {expired leases re-queued, delayed retries released}.
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local reaped = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local kind, state = kind_and_state(ARGV[2] .. 'job:' .. id)
  if kind and state_status(state) == 'processing' then
    redis.call('RPUSH', ARGV[2] .. 'ready:' .. kind, id)
    redis.call('LPUSH', ARGV[2] .. 'signal:' .. kind, '1')
    redis.call('LTRIM', ARGV[2] .. 'signal:' .. kind, 0, 63)
    redis.call('HINCRBY', KEYS[3], 'lease_expiries', 1)
    reaped = reaped + 1
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[2], member)
  local kind, id = string.match(member, '^([^|]+)|(.+)$')
  if kind then
    redis.call('RPUSH', ARGV[2] .. 'ready:' .. kind, id)
    redis.call('LPUSH', ARGV[2] .. 'signal:' .. kind, '1')
    redis.call('LTRIM', ARGV[2] .. 'signal:' .. kind, 0, 63)
  end
end
return { reaped, #due }
