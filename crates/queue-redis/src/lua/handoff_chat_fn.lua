-- Direct hand-off of a chat job to an idle chat worker, the producer's side (handoff_fn.lua is
-- the same for the other kinds): used by submit_chat.lua inside its `chat_handoff_fns`, after
-- batch_fn.lua, the generated read_claim and start_chat_fn.lua.
-- A chat worker whose claim found fewer dispatches than it asked for registers in idle:chat and
-- blocks on handoff:chat:<worker> as well as on signal:chat. A chat submit that claims an idle
-- lane for its job (the lane store's `lane_append`), and finds a worker registered and no other
-- lane's job waiting in ready:chat, starts the claim for that worker as a claim of ready:chat
-- would (`start_chat`) instead of dispatching it, and pushes the answer onto the worker's list:
-- its `BLPOP` returns the job itself. The lane's claim is cut to a short lease, the hand-off
-- lease (`RedisBackendConfig::handoff_lease`), when that is shorter than the claim TTL: it bounds
-- how long a job handed to a worker that died while registered waits for the lane reaper; the
-- worker lengthens it to the claim TTL while the job runs.

-- hand_chat(prefix, w, job, epoch, lane, now, deadline, lease) (now and lease numbers; epoch and
-- deadline as text): withdraws worker `w`'s registration, starts the lane's claim of `job` under
-- `epoch` (its lease already set, until `deadline`), cuts that lease to `lease` ms from now when
-- that ends sooner, and pushes the `start_chat` answer
-- {'run', epoch, lane, deadline, the record's CLAIM_FIELDS values (null for a field the hash
-- lacks)} onto the worker's hand-off list as JSON. The list expires with the lease should no one
-- ever read it. Returns whether the job was handed over (not when its record is not `queued`).
local function hand_chat(prefix, w, job, epoch, lane, now, deadline, lease)
  redis.call('ZREM', prefix .. 'idle:chat', w)
  local b = new_batch()
  local started = start_chat(b, prefix, prefix .. 'stats', prefix .. 'leases', job, epoch, lane, now,
    tonumber(deadline) - now, deadline, true)
  flush_batch(b)
  if started[1] ~= 'run' then
    return false
  end
  if now + lease < tonumber(deadline) then
    deadline = decimal(now + lease)
    redis.call('HSET', prefix .. 'lane:' .. lane .. ':active', 'deadline', deadline)
    redis.call('ZADD', prefix .. 'leases', deadline, lane)
  end
  local values = {}
  for i = 1, #started[5] do
    values[i] = started[5][i] or cjson.null
  end
  local list = prefix .. 'handoff:chat:' .. w
  redis.call('RPUSH', list, cjson.encode({ 'run', epoch, lane, deadline, values }))
  redis.call('PEXPIRE', list, decimal(math.max(tonumber(deadline) - now, 1)))
  return true
end
