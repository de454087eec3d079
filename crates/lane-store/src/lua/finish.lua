-- finish: ends the lane's current claim and claims the next waiting job, if any (finish_fn.lua).
-- KEYS: 1 lanes, 2 leases, 3 epoch, 4 lane active, 5 lane waiting, 6 chat ready, 7 chat signal
-- ARGV: 1 job, 2 epoch, 3 lane, 4 lease deadline of the next claim (ms), 5 dispatch
-- Returns {'next', job, epoch}, {'idle'} (the lane's keys are gone) or {'stale', current epoch}.
return finish_lane(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
                   ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
