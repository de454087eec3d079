-- Ends the lane's current claim (`job`, `epoch`) and claims the next waiting job, if any. Shared
-- by the lane store's `finish` script and the Redis backend's `complete_many` script (which
-- records a chat job's outcome and advances its lane in one round trip). Needs common.lua.
-- `checked`: the caller has already fenced the claim in the same script (complete_many), so it is
-- not read again. `add_lease` (optional): how the next claim's lease-index entry is written (see
-- `claim` in common.lua).
-- Returns {'next', job, epoch}, {'idle'} (the lane's keys are gone) or {'stale', current epoch}.
local function finish_lane(lanes_key, leases_key, epoch_key, active_key, waiting_key, ready_key, signal_key,
                           job, epoch, lane, deadline, dispatch, checked, add_lease)
  local current = not checked and stale(active_key, job, epoch)
  if current then
    return {'stale', current}
  end
  local next_job = redis.call('LPOP', waiting_key)
  if next_job then
    local next_epoch = claim(active_key, leases_key, epoch_key, next_job, lane, deadline, add_lease)
    push_dispatch(dispatch, ready_key, signal_key, next_epoch, deadline, next_job, lane)
    return {'next', next_job, next_epoch}
  end
  -- Idle now: leave nothing behind (LPOP of the last element already removed the list).
  redis.call('DEL', active_key)
  redis.call('ZREM', leases_key, lane)
  redis.call('ZREM', lanes_key, lane)
  return {'idle'}
end
