-- Records a worker's outcome (record_outcome_fn.lua), fenced: refused (and counted) unless the job is `processing` under
-- the caller's epoch and, for chat jobs, its lane's active claim is still that job and epoch.
-- KEYS[1] job hash  KEYS[2] inflight  KEYS[3] pending:<kind>  KEYS[4] finished  KEYS[5] stats
-- KEYS[6] delayed  KEYS[7] lane active hash (chat) or the job hash again (non-chat)
-- KEYS[8] finished:meta (id -> kind:status, which the job store's purge reads)
-- KEYS[9] ready:<kind> (where the next job is claimed from)
-- KEYS[10..15] (chat) lanes, leases, epoch, lane waiting, ready:chat, signal:chat
-- ARGV[1] job  ARGV[2] epoch  ARGV[3] outcome: done | failed | retry  ARGV[4] result JSON or error
-- ARGV[5] now  ARGV[6] retention (ms)  ARGV[7] due (ms, retry of a non-chat job)  ARGV[8] kind
-- ARGV[9] claim: how many more jobs of the kind to claim in the same call (0 for chat)
-- ARGV[10] lease (ms) of those claims  ARGV[11] tenant prefix
-- ARGV[12] '1' to advance a chat job's lane in the same call once its outcome is final
-- ARGV[13] lease deadline of the lane's next claim  ARGV[14] lane  ARGV[15] dispatch ('1'/'0')
-- Finish-and-claim-next in one round trip: a busy worker spends one call per job.
-- Returns {`ok` | `notfound` | `stale:<current epoch>`, claimed records (HGETALL each),
-- the lane's `finish_lane` answer or {} }.
local function claim_next()
  local n = tonumber(ARGV[9])
  if n <= 0 then return {} end
  return claim_plain(KEYS[9], KEYS[2], KEYS[5], n, tonumber(ARGV[5]), tonumber(ARGV[10]), ARGV[11], ARGV[8])
end
local f = redis.call('HMGET', KEYS[1], 'status', 'epoch')
local st, ep = f[1], f[2]
-- A caller that sent an unknown job has nothing to carry on with: claim nothing for it.
if not st then return { 'notfound', {}, {} } end
local current = ep or '0'
local fenced = st ~= 'processing' or ep ~= ARGV[2]
if ARGV[8] == 'chat' then
  local active = redis.call('HMGET', KEYS[7], 'job', 'epoch')
  if active[1] ~= ARGV[1] or active[2] ~= ARGV[2] then
    fenced = true
    current = active[2] or current
  end
end
if fenced then
  redis.call('HINCRBY', KEYS[5], 'fenced', 1)
  return { 'stale:' .. current, claim_next(), {} }
end
local kind = ARGV[8]
record_outcome(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[8], ARGV[1], ARGV[3],
               ARGV[4], ARGV[5], ARGV[6], ARGV[7], kind)
if ARGV[3] == 'retry' then
  return { 'ok', claim_next(), {} }
end
local lane_answer = {}
if kind == 'chat' and ARGV[12] == '1' then
  lane_answer = finish_lane(KEYS[10], KEYS[11], KEYS[12], KEYS[7], KEYS[13], KEYS[14], KEYS[15],
                            ARGV[1], ARGV[2], ARGV[14], ARGV[13], ARGV[15])
end
return { 'ok', claim_next(), lane_answer }
