-- Wakes up to `n` idle workers blocked on `signal` (one token each, at most 64 in the list: more
-- would wake no one more; the trim runs only when there are that many). Shared by submit_one.lua,
-- submit_plain.lua and complete_many.lua.
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
  if len > 64 then
    redis.call('LTRIM', signal, '0', '63')
  end
end
