-- Shared by the scripts that change many jobs in one call (submit_plain.lua, claim_plain.lua,
-- claim_chat.lua, complete_many.lua): the writes that touch one key for many jobs (a counter, a
-- sorted set's or a list's members) are gathered and sent as one command per key by
-- `flush_batch`, instead of one command per job. A script must not read a gathered key between
-- gathering and the flush, unless it counts what is still gathered (complete_many counts its
-- chat dispatches); otherwise it flushes first.
-- Entries are found by key (and field, or command) in nested tables, not by a concatenated
-- name: no string is built per job.
-- The decimal text of integer `n`, remembered for the rest of the call (the script's body runs
-- afresh each call, so does this table). Redis turns a Lua number given to `redis.call` into
-- text with a float format, which costs more than the command's own work on a small hash; the
-- jobs of one call mostly share their times, epochs and attempts, so each is formatted once.
local decimals = {}
local function decimal(n)
  local s = decimals[n]
  if not s then
    s = string.format('%d', n)
    decimals[n] = s
  end
  return s
end

-- The decimal text of one more than the decimal text `s` (0 when `s` is false or not a number):
-- a claim's next epoch and attempt. Remembered for the call as `decimal` is: the jobs of one call
-- mostly share them, and `tonumber` of a string (strtod) costs more than the table lookup.
local successors = {}
local function successor(s)
  local key = s or ''
  local n = successors[key]
  if not n then
    n = decimal((tonumber(s) or 0) + 1)
    successors[key] = n
  end
  return n
end

local function new_batch()
  return { counters = {}, counter_order = {}, sets = {}, set_order = {} }
end

-- The entry of `index[outer][inner]`, made as `{ a, b, c }` (`c` nil: an empty list) and added
-- to `order` (the flush's order) the first time it is asked for.
local function batch_entry(index, order, outer, inner, a, b, c)
  local level = index[outer]
  if not level then
    level = {}
    index[outer] = level
  end
  local e = level[inner]
  if not e then
    e = { a, b, c or {} }
    level[inner] = e
    order[#order + 1] = e
  end
  return e
end

-- Adds `by` to hash field `field` of `key` at the flush.
local function batch_incr(b, key, field, by)
  local c = batch_entry(b.counters, b.counter_order, key, field, key, field, 0)
  c[3] = c[3] + by
end

-- The argument list of `command` (ZADD, ZREM or RPUSH) on `key`, gathered for the flush.
local function batch_args(b, command, key)
  return batch_entry(b.sets, b.set_order, command, key, command, key)[3]
end

-- ZADD `member` with `score` to `key` at the flush.
local function batch_zadd(b, key, score, member)
  local args = batch_args(b, 'ZADD', key)
  args[#args + 1] = score
  args[#args + 1] = member
end

-- ZREM `member` from `key` at the flush.
local function batch_zrem(b, key, member)
  local args = batch_args(b, 'ZREM', key)
  args[#args + 1] = member
end

-- RPUSH `value` onto `key` at the flush (values keep their order).
local function batch_rpush(b, key, value)
  local args = batch_args(b, 'RPUSH', key)
  args[#args + 1] = value
end

-- Sends the gathered writes, each key's in commands of at most 1,000 arguments (`unpack` has a
-- stack limit of about 8,000), and empties the batch.
local function flush_batch(b)
  for _, c in ipairs(b.counter_order) do
    if c[3] ~= 0 then
      redis.call('HINCRBY', c[1], c[2], c[3])
    end
  end
  for _, s in ipairs(b.set_order) do
    local args, step = s[3], 1000
    for from = 1, #args, step do
      redis.call(s[1], s[2], unpack(args, from, math.min(from + step - 1, #args)))
    end
  end
  b.counters, b.counter_order, b.sets, b.set_order = {}, {}, {}, {}
end

