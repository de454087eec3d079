-- A job record's state, one field of its hash: `state` = `<status>|<epoch>|<attempt>|<updated>`
-- (LEGACY_STATE_FIELDS, store.rs, in that order; the three numbers in decimal). The four change
-- together at every claim and every end, and the fence reads two of them: as one field they are
-- one argument of an `HSET` or an `HMGET` where they were four, and a fence is an `HGET`.
-- Prepended to every script that reads a record's state (the generated read_claim, scripts.rs,
-- starts with it).
-- A record written before the field holds the four apart, under those names. `legacy_state`
-- moves such a record to the field when a script first reads it, so a script that has read a
-- record's state writes only `state`.

-- The state of the record `jk` that has no `state` field, moved into one; false when `jk` holds
-- no record.
local function legacy_state(jk)
  local f = redis.call('HMGET', jk, 'status', 'epoch', 'attempt', 'updated')
  if not f[1] then
    return false
  end
  local s = f[1] .. '|' .. (f[2] or '0') .. '|' .. (f[3] or '0') .. '|' .. (f[4] or '0')
  redis.call('HSET', jk, 'state', s)
  redis.call('HDEL', jk, 'status', 'epoch', 'attempt', 'updated')
  return s
end

-- The kind and the state (text) of the record `jk`, each false when there is no record.
local function kind_and_state(jk)
  local f = redis.call('HMGET', jk, 'kind', 'state')
  return f[1], f[2] or (f[1] and legacy_state(jk))
end

-- The state of the record `jk` (text), or false when there is none.
local function job_state(jk)
  return redis.call('HGET', jk, 'state') or legacy_state(jk)
end

-- The status, epoch and attempt (text) of state `s`; nil when `s` is false or not a state. A new
-- job's state (the claims' usual case) is told by its head, without a pattern match, which costs
-- Redis several times as much.
local function state_parts(s)
  if not s then
    return nil
  end
  if string.sub(s, 1, 11) == 'queued|0|0|' then
    return 'queued', '0', '0'
  end
  return string.match(s, '^(%a+)|(%d+)|(%d+)|')
end

-- The status of state `s` (false when `s` is false).
local function state_status(s)
  return s and string.match(s, '^%a*')
end

-- The state text of `status`, `epoch`, `attempt` and `updated` (text).
local function state_of(status, epoch, attempt, updated)
  return status .. '|' .. epoch .. '|' .. attempt .. '|' .. updated
end
