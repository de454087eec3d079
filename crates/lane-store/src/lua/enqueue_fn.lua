-- The two halves of the lane store's `enqueue` (enqueue.lua), shared with the Redis backend's
-- `submit_chat` script, which creates a chat job's record between them: all three in one script.
-- Needs common.lua.

-- Whether `lane` takes `job`, read-only: returns the enqueue's answer when it ends here with
-- nothing changed — {'running', 0, size} or {'waiting', position, size} (already in the lane),
-- {'finished', 0, size} (the job's record at `record_key` is already finished: a recovery sweep
-- that read it as pending just before it finished must not put it back), {'full'} (an active
-- claim and `max_queue` jobs waiting) — or nil, then the lane's active job (false when idle) and
-- how many jobs wait, for `lane_append`. `record_key` false: the caller knows that no record of
-- `job` exists (the backend's submit checks that first), and its status is not read.
local function lane_admit(active_key, waiting_key, record_key, job, max_queue)
  local active_job = redis.call('HGET', active_key, 'job')
  local waiting = redis.call('LLEN', waiting_key)
  if active_job == job then
    return {'running', 0, waiting + 1}
  end
  local at = active_job and redis.call('LPOS', waiting_key, job)
  if at then
    return {'waiting', at + 1, waiting + 1}
  end
  -- The record's status: the head of its `state` field (`<status>|<epoch>|<attempt>|<updated>`),
  -- or, in a record written before that field, a field of its own.
  if record_key then
    local record = redis.call('HMGET', record_key, 'state', 'status')
    local status = record[1] and string.match(record[1], '^%a*') or record[2]
    if status == 'done' or status == 'failed' or status == 'cancelled' then
      return {'finished', 0, waiting + (active_job and 1 or 0)}
    end
  end
  if active_job and waiting >= tonumber(max_queue) then
    return {'full'}
  end
  return nil, active_job, waiting
end

-- Appends `job` to `lane` once `lane_admit` let it in (`active_job` and `waiting` are what it
-- read): at the back of the waiting jobs, or, in an idle lane, claimed at once until `deadline`
-- (and handed to the chat workers when `dispatch` is '1', see `push_dispatch`).
-- Returns {'queued', position, size} or {'claimed', 0, size, epoch}.
local function lane_append(lanes_key, leases_key, epoch_key, active_key, waiting_key, ready_key, signal_key,
                           job, lane, deadline, dispatch, active_job, waiting)
  if active_job then
    redis.call('RPUSH', waiting_key, job)
    return {'queued', waiting + 1, waiting + 2}
  end
  -- No active claim means an idle lane: every script keeps "waiting jobs imply an active claim".
  local epoch = claim(active_key, leases_key, epoch_key, job, lane, deadline)
  redis.call('ZADD', lanes_key, '0', lane)
  push_dispatch(dispatch, ready_key, signal_key, epoch, deadline, job, lane)
  return {'claimed', 0, waiting + 1, epoch}
end
