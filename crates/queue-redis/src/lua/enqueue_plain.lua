-- Puts an existing queued non-chat job on its ready list and wakes one idle worker (state_fn.lua
-- is prepended).
-- KEYS[1] job hash  KEYS[2] ready:<kind>  KEYS[3] signal:<kind>
-- ARGV[1] job  ARGV[2] kind
-- Returns `ok`, `notfound`, `kind:<actual>` or `status:<actual>`.
local kind, state = kind_and_state(KEYS[1])
if not kind then return 'notfound' end
if kind ~= ARGV[2] then return 'kind:' .. kind end
local status = state_status(state)
if status ~= 'queued' then return 'status:' .. tostring(status) end
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('LPUSH', KEYS[3], '1') > 64 then
  redis.call('LTRIM', KEYS[3], 0, 63)
end
return 'ok'
