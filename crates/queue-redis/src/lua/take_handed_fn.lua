-- Direct hand-off to idle workers (handoff_fn.lua), the worker's side: used by claim_plain.lua
-- (after batch_fn.lua, the generated read_claim with state_fn.lua, claim_plain_fn.lua, for
-- INFLIGHT_KEEPER, and handed_fn.lua).
-- take_handed(b, prefix, idle, list, worker, inflight, deadline): withdraws `worker`'s
-- registration and takes what was handed to it and not yet read from `list`: each job still
-- `processing` under the epoch it was handed with gets the lease of the worker's claims
-- (`deadline`, through the batch `b`: its short lease, which the worker lengthens) and is
-- returned, as claim_plain returns its claims; a job whose short lease ran out and was queued
-- again meanwhile is dropped.
local function take_handed(b, prefix, idle, list, worker, inflight, deadline)
  local out = {}
  for _, h in ipairs(withdraw_and_read(idle, list, worker)) do
    -- The last value is the hand-off's lease end: the job gets the claim's lease here.
    h[#h] = nil
    claimed_values(h)
    local id = h[CLAIM_ID]
    local _, handed_epoch = state_parts(h[CLAIM_STATE])
    local st, epoch = state_parts(job_state(prefix .. 'job:' .. id))
    if st == 'processing' and epoch == handed_epoch then
      if #out == 0 then
        batch_zadd(b, inflight, '+inf', INFLIGHT_KEEPER)
      end
      batch_zadd(b, inflight, deadline, id)
      out[#out + 1] = h
    end
  end
  return out
end
