-- reclaim: re-claims the lane's current head job under a new epoch (a retry keeps its place).
-- KEYS: 1 leases, 2 epoch, 3 lane active, 4 chat ready, 5 chat signal
-- ARGV: 1 job, 2 epoch, 3 lane, 4 new lease deadline (ms), 5 dispatch
-- Returns {'ok', epoch} or {'stale', current epoch}.
local current = stale(KEYS[3], ARGV[1], ARGV[2])
if current then
  return {'stale', current}
end
local epoch = claim(KEYS[3], KEYS[1], KEYS[2], ARGV[1], ARGV[3], ARGV[4])
push_dispatch(ARGV[5], KEYS[4], KEYS[5], epoch, ARGV[4], ARGV[1], ARGV[3])
return {'ok', epoch}
