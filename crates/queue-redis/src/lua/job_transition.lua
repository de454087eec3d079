-- Applies one JobUpdate: fence, then the transition table, then the writes; on refusal nothing
-- is written. Mirrors JobRecord::apply. state_fn.lua is prepended.
-- KEYS[1] job hash, KEYS[2] stats hash, KEYS[3..6] pending zsets of the kinds named in
--   ARGV[12..15], in that order
-- ARGV[1] id, ARGV[2] now (ms), ARGV[3] to ('' = keep), ARGV[4] expected epoch ('' = no fence),
--   ARGV[5] new epoch ('' = keep), ARGV[6] '1' = one more attempt, ARGV[7] '1' = set result,
--   ARGV[8] result (JSON text), ARGV[9] '1' = set error, ARGV[10] error,
--   ARGV[11] retention of a finished record (ms; '0' = no TTL), ARGV[12..15] kind names,
--   ARGV[16] the tenant's key prefix (a finished record is indexed in `finished:<kind>:<status>`)
-- Counters: only `processing` is counted; queued is derived, finished states are index sizes.
-- Returns the record (HGETALL, a flat array) or one of 'notfound', 'stale:<current epoch>',
-- 'invalid:<current status>'.
local kind, state = kind_and_state(KEYS[1])
local from, epoch, attempt = state_parts(state)
if not from then
  return 'notfound'
end
if ARGV[4] ~= '' and ARGV[4] ~= epoch then
  return 'stale:' .. epoch
end
local to = ARGV[3]
if to ~= '' then
  local allowed = {
    queued = { processing = true, failed = true, cancelled = true },
    processing = { queued = true, done = true, failed = true },
  }
  if not (allowed[from] and allowed[from][to]) then
    return 'invalid:' .. from
  end
end

local id = ARGV[1]
if ARGV[6] == '1' then
  attempt = string.format('%d', tonumber(attempt) + 1)
end
local fields = { 'state', state_of(to ~= '' and to or from, ARGV[5] ~= '' and ARGV[5] or epoch, attempt, ARGV[2]) }
if ARGV[7] == '1' then
  fields[#fields + 1] = 'result'
  fields[#fields + 1] = ARGV[8]
end
if ARGV[9] == '1' then
  fields[#fields + 1] = 'error'
  fields[#fields + 1] = ARGV[10]
end
redis.call('HSET', KEYS[1], unpack(fields))

if to ~= '' and to ~= from then
  local running = 'count:' .. kind .. ':processing'
  if from == 'processing' then
    if redis.call('HINCRBY', KEYS[2], running, -1) <= 0 then
      redis.call('HDEL', KEYS[2], running)
    end
  elseif to == 'processing' then
    redis.call('HINCRBY', KEYS[2], running, 1)
  end
  if to == 'done' or to == 'failed' or to == 'cancelled' then
    for i = 12, 15 do
      if ARGV[i] == kind then
        redis.call('ZREM', KEYS[i - 9], id)
      end
    end
    redis.call('ZADD', ARGV[16] .. 'finished:' .. kind .. ':' .. to, ARGV[2], id)
    local retention = tonumber(ARGV[11])
    if retention and retention > 0 then
      redis.call('PEXPIRE', KEYS[1], retention)
    end
  end
end
return redis.call('HGETALL', KEYS[1])
