-- hand_new(K, A, prefix, now, lease, w) (K and A as for `create_job`, job_create_fn.lua; now and
-- lease numbers): a lone submit's job created already claimed for the idle worker `w`, for when
-- no job of its kind waits in its ready list (the caller checked: one that waits is older, and
-- `hand_off` gives the worker that one). Writes what `create_job` and then `hand_off` would leave:
-- the record (`processing` under epoch 1, attempt 1, as a first claim leaves it), its sequence
-- number and pending index, its lease of `lease` ms in `inflight`, the `processing` count, the
-- worker's registration withdrawn and the record pushed onto its hand-off list (push_handed);
-- but not the ready list's push and pop, the claim's read of the record and its second write.
-- Used by submit_one.lua inside `hand_new_fns` (scripts.rs), after inflight_keeper.lua,
-- push_handed_fn.lua and the generated `new_claim` (the claimed record's values in CLAIM_FIELDS's
-- order): no batch functions, no claim function, no table of names; for a submit to an idle
-- worker, the path W3 measures, the fewer closures and tables a call makes the sooner Redis
-- answers the worker's BLPOP (about a fifth of the script's time, measured by SLOWLOG at 200
-- calls/s).
-- Returns the new seq (>= 1), or 0 when the id is taken (nothing written).
local function hand_new(K, A, prefix, now, lease, w)
  local seq, _, fixed = create_job(K, A, '1')
  if seq == 0 then
    return 0
  end
  local id, kind, at = A[1], A[2], A[6]
  redis.call('ZREM', prefix .. 'idle:' .. kind, w)
  local deadline = string.format('%d', now + lease)
  -- The keeper first, as claim_plain adds it: a new `inflight` is created as a skiplist.
  redis.call('ZADD', prefix .. 'inflight', '+inf', INFLIGHT_KEEPER, deadline, id)
  redis.call('HINCRBY', prefix .. 'stats', 'count:' .. kind .. ':processing', 1)
  push_handed(prefix, kind, w, new_claim(id, at, fixed, A[7], '1'), deadline, lease)
  return seq
end
