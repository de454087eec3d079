-- Deletes one job record with its index entries (and takes a running one off its counter);
-- state_fn.lua is prepended.
-- KEYS[1] job hash, KEYS[2] stats hash, KEYS[3..6] pending zsets of the kinds named in
--   ARGV[2..5], in that order
-- ARGV[1] id, ARGV[2..5] kind names, ARGV[6] the tenant's key prefix (for the finished indexes)
-- Returns 1 when a record was deleted, 0 when there was none.
local id = ARGV[1]
local kind, state = kind_and_state(KEYS[1])
if not kind then
  return 0
end
local status = state_status(state)
if status == 'processing' then
  local running = 'count:' .. kind .. ':processing'
  if redis.call('HINCRBY', KEYS[2], running, -1) <= 0 then
    redis.call('HDEL', KEYS[2], running)
  end
end
for i = 2, 5 do
  if ARGV[i] == kind then
    redis.call('ZREM', KEYS[i + 1], id)
  end
end
if status == 'done' or status == 'failed' or status == 'cancelled' then
  redis.call('ZREM', ARGV[6] .. 'finished:' .. kind .. ':' .. status, id)
end
return redis.call('DEL', KEYS[1])
