-- Wakes up to `n` idle workers blocked on `signal` (one token each). Tokens nobody takes pile up
-- while no worker waits (a producer-only process, busy workers): the list is cut back to 64
-- (more would wake no one more) only when a push takes it past 128, so that a push onto a full
-- list is one command, not two, 63 times in 64. Shared by submit_one.lua, submit_plain.lua and
-- complete_many.lua.
local function wake(signal, n)
  local len
  if n == 1 then
    len = redis.call('LPUSH', signal, '1')
  else
    local tokens = {}
    for t = 1, math.min(n, 64) do
      tokens[t] = '1'
    end
    len = redis.call('LPUSH', signal, unpack(tokens))
  end
  if len > 128 then
    redis.call('LTRIM', signal, '0', '63')
  end
end
