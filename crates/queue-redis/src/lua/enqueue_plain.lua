-- Puts an existing queued non-chat job on its ready list and wakes one idle worker (state_fn.lua
-- is prepended).
-- KEYS[1] job hash  KEYS[2] ready:<kind>  KEYS[3] signal:<kind>
-- ARGV[1] job  ARGV[2] kind
-- Returns `ok`, `notfound`, `kind:<actual>` or `status:<actual>`.
local fields = redis.call('HMGET', KEYS[1], 'kind', 'state')
if not fields[1] then return 'notfound' end
if fields[1] ~= ARGV[2] then return 'kind:' .. fields[1] end
local status = state_status(fields[2] or legacy_state(KEYS[1]))
if status ~= 'queued' then return 'status:' .. tostring(status) end
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('LPUSH', KEYS[3], '1') > 64 then
  redis.call('LTRIM', KEYS[3], 0, 63)
end
return 'ok'
