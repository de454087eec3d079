-- Direct hand-off to idle workers, the producer's side: used by submit_plain.lua and submit_one.lua
-- (inside their `handoff_fns`, after batch_fn.lua, the generated read_claim, claim_plain_fn.lua and
-- push_handed_fn.lua); the worker's side is claim_plain.lua with take_handed_fn.lua.
-- A worker whose claim found fewer jobs than it asked for registers in idle:<kind> (score: the
-- registration's deadline, past which no one hands it anything) and blocks on its hand-off list
-- handoff:<kind>:<worker> as well as on the kind's wake-up list. A submit that finds a worker
-- registered claims the head of the ready list for it, under a short lease, and pushes the
-- claimed record onto that list: the blocked worker's `BLPOP` returns the job itself, and it
-- starts it without a claim round trip of its own (one hand-off between processes instead of
-- two). A registration serves one hand-off. The short lease bounds how long a job handed to a
-- worker that died while registered waits for the reaper; the worker lengthens it while the job
-- runs (`RedisBackendConfig::short_lease`).

-- hand_off(prefix, kind, now, lease, w) (now and lease numbers): withdraws the registration of
-- worker `w` in idle:<kind> (the caller found it, not past its deadline), claims the head of
-- ready:<kind> for it, with a lease of `lease` ms, and pushes the claimed record onto its hand-off
-- list (push_handed). Returns whether a job was handed over.
local function hand_off(prefix, kind, now, lease, w)
  redis.call('ZREM', prefix .. 'idle:' .. kind, w)
  local b = new_batch()
  local got = claim_plain(b, prefix .. 'ready:' .. kind, prefix .. 'inflight', prefix .. 'stats', 1, now, lease,
    prefix, kind)[1]
  flush_batch(b)
  if not got then
    return false
  end
  local values = {}
  for i = 1, #got do
    values[i] = got[i] or cjson.null
  end
  push_handed(prefix, kind, w, values, decimal(now + lease), lease)
  return true
end
