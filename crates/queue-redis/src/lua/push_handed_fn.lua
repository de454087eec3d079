-- Shared by both sides of a submit's hand-off to an idle worker: `hand_off` (handoff_fn.lua) and
-- `hand_new` (handoff_new_fn.lua). Needs nothing before it: submit_one.lua's `hand_new_fns` has
-- no batch functions (no `decimal`).
-- push_handed(prefix, kind, w, values, deadline, lease): pushes a job claimed for worker `w` onto
-- its hand-off list: the JSON array of `values` (its CLAIM_FIELDS values, cjson.null for a field
-- the hash lacks) followed by `deadline`, when its lease of `lease` ms runs out (ms, text). The
-- list expires with the lease should no one ever read it.
local function push_handed(prefix, kind, w, values, deadline, lease)
  values[#values + 1] = deadline
  local list = prefix .. 'handoff:' .. kind .. ':' .. w
  redis.call('RPUSH', list, cjson.encode(values))
  redis.call('PEXPIRE', list, string.format('%d', lease))
end
