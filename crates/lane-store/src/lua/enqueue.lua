-- enqueue: appends a job to a lane; an idle lane claims it at once (enqueue_fn.lua).
-- KEYS: 1 lanes, 2 leases, 3 epoch, 4 lane active, 5 lane waiting, 6 chat ready, 7 chat signal,
--       8 the job's record hash (same tenant, same slot)
-- ARGV: 1 job, 2 lane, 3 lease deadline (ms), 4 max_queue, 5 dispatch ('1' or '0')
-- Returns {outcome, position, size[, epoch]}: 'running' or 'waiting' (already in the lane:
-- nothing changed), 'queued', 'claimed' (with the new epoch); {'finished', 0, size} (the job's
-- record is already finished: a recovery sweep that read it as pending just before it finished
-- must not put it back); or {'full'} (nothing changed).
local answer, active_job, waiting = lane_admit(KEYS[4], KEYS[5], KEYS[8], ARGV[1], ARGV[4])
if answer then
  return answer
end
return lane_append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
                   ARGV[1], ARGV[2], ARGV[3], ARGV[5], active_job, waiting)
