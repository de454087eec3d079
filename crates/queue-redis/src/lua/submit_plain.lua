-- Submits one or more non-chat jobs in one call: for each, `create_job` (job_create_fn.lua) and
-- its ready list; then one wake-up per kind, with as many tokens as jobs of that kind (at most 64),
-- so that as many idle workers wake as there is work for.
-- KEYS[1] seq counter
-- ARGV[1] tenant, ARGV[2] now (ms), ARGV[3] tenant prefix; then 5 per job: id, kind, lane
--   ('' = none), request id ('' = none), payload (JSON text)
-- Returns, per job, its new seq (>= 1), or 0 when its id is taken (nothing written for it).
local prefix = ARGV[3]
local out, woken = {}, {}
for i = 4, #ARGV, 5 do
  local id, kind = ARGV[i], ARGV[i + 1]
  local seq = create_job(
    { prefix .. 'job:' .. id, KEYS[1], prefix .. 'pending:' .. kind },
    { id, kind, ARGV[1], ARGV[i + 2], ARGV[i + 3], ARGV[2], ARGV[i + 4] })
  if seq > 0 then
    redis.call('RPUSH', prefix .. 'ready:' .. kind, id)
    woken[kind] = (woken[kind] or 0) + 1
  end
  out[#out + 1] = seq
end
for kind, n in pairs(woken) do
  local tokens = {}
  for t = 1, math.min(n, 64) do
    tokens[t] = '1'
  end
  -- Tokens beyond 64 would wake no one more; trim only when there are that many.
  if redis.call('LPUSH', prefix .. 'signal:' .. kind, unpack(tokens)) > 64 then
    redis.call('LTRIM', prefix .. 'signal:' .. kind, 0, 63)
  end
end
return out
