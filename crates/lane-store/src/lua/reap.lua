-- reap: re-claims the head job of up to `limit` lanes whose lease has expired (deadline <= now).
-- KEYS: 1 leases, 2 epoch, 3 chat ready, 4 chat signal
-- ARGV: 1 now (ms), 2 new lease deadline (ms, > now), 3 lane key prefix ('lw:{tenant}:lane:'),
--       4 limit, 5 dispatch, 6 job record key prefix ('lw:{tenant}:job:')
-- Returns {scanned, lane1, job1, epoch1, lane2, ...}; scanned < limit means none is left.
--
-- With dispatch on, the store is the Redis backend's, whose chat job records carry the epoch of
-- the claim they run under: the record's `state` field is `<status>|<epoch>|<attempt>|<updated>`
-- (queue-redis's state_fn.lua). The backend fences a worker's outcome and a dispatch it claims on
-- that epoch (complete_many.lua, claim_chat_fn.lua), without reading the lane's claim, so a
-- re-claim must move it too: a `queued` or `processing` record gets the new epoch, and the
-- worker whose lease ran out can no longer end the job, nor can an older dispatch of it start.
-- A finished record is left as it is (its dispatch tells the worker to move the lane on). A record
-- written before the `state` field keeps its status and epoch in fields of their own (the backend
-- moves them into `state` when it first reads the record).
local function stamp(record_key, epoch)
  local state = redis.call('HGET', record_key, 'state')
  if not state then
    local status = redis.call('HGET', record_key, 'status')
    if status == 'queued' or status == 'processing' then
      redis.call('HSET', record_key, 'epoch', epoch)
    end
    return
  end
  local status, rest = string.match(state, '^(%a+)|%d+|(.*)$')
  if status == 'queued' or status == 'processing' then
    redis.call('HSET', record_key, 'state', status .. '|' .. epoch .. '|' .. rest)
  end
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
local out = {#expired}
for _, lane in ipairs(expired) do
  -- The lane is only known here, so its key is built from the tenant prefix passed in ARGV: it
  -- carries the tenant's hash tag, hence the same Cluster slot as every key in KEYS.
  local active = ARGV[3] .. lane .. ':active'
  local job = redis.call('HGET', active, 'job')
  if job then
    local epoch = claim(active, KEYS[1], KEYS[2], job, lane, ARGV[2])
    if ARGV[5] == '1' then
      stamp(ARGV[6] .. job, epoch)
    end
    push_dispatch(ARGV[5], KEYS[3], KEYS[4], epoch, ARGV[2], job, lane)
    out[#out + 1] = lane
    out[#out + 1] = job
    out[#out + 1] = epoch
  else
    -- A lease without a claim cannot arise; if one did, it must not be returned again and again.
    redis.call('ZREM', KEYS[1], lane)
  end
end
return out
