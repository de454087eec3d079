-- Submits chat jobs, one or many, in one atomic call (job_create_fn.lua and the lane store's
-- common.lua and enqueue_fn.lua are prepended). Each job, in the call's order, as if it had a call
-- of its own: its id checked free first, then the lane's verdict (`lane_admit`, which writes
-- nothing), then the record (`add_job`), then its place in the lane (`lane_append`: at the back
-- of the waiting jobs, or claimed at once in an idle lane and dispatched), as the lane store's
-- `enqueue` makes it (a job handed to an idle worker: its place in the lane, then its record, see
-- below). Nothing is written for a job whose id is taken or whose lane is full; the others of the
-- call go on. Jobs of one lane in one call take the lane in the call's order. Concurrent submits
-- of a process are sent together (the backend's chat submit combiner): one script call, not one
-- per job.
-- KEYS[1] seq counter, KEYS[2] pending:chat (add_job's), KEYS[3] lanes, KEYS[4] leases,
--   KEYS[5] epoch, KEYS[6] ready:chat, KEYS[7] signal:chat
-- ARGV[1] tenant, ARGV[2] now (ms), ARGV[3] lease deadline (ms) of an idle lane's claim,
--   ARGV[4] max_queue, ARGV[5] dispatch ('1' or '0') (the lane store's), ARGV[6] tenant prefix
--   (the job hashes, lane keys, idle:chat and the hand-off lists are built from it: they share
--   the tenant's hash tag, hence the slot), ARGV[7] lease (ms) of a claim handed to an idle
--   worker; then 4 per job: id, lane, request id ('' = none), payload (JSON text)
-- A job that would claim an idle lane, with dispatch on, goes to a chat worker registered as idle
-- when one is and no other lane's job waits in ready:chat (first come, first served):
-- `hand_new_chat` (handoff_chat_fn.lua) creates it already started for that worker and pushes it
-- onto its hand-off list, instead of the dispatch and wake-up. It is built on first use by
-- `chat_hand_fns` (scripts.rs), so that a call that hands nothing over does not make its
-- closures.
-- Returns one flat array: per job, how many values its answer has, then the answer: the new seq
-- followed by the enqueue's answer: {seq, 'queued', position, size}, {seq, 'claimed', 0, size,
-- epoch}, or {seq, 'running' | 'waiting', position, size} (a job of that id was already in the
-- lane and stays where it is; the record is new). {0} when the id is taken, {0, 'full'} when the
-- lane is full: nothing written for that job. {'error', message} when a command failed for it.

-- The keys and arguments of one job, in the order add_job, lane_append and hand_new_chat
-- read them: K[1] job hash, K[2] seq, K[3] pending:chat, K[4] lanes, K[5] leases, K[6] epoch,
-- K[7] lane active, K[8] lane waiting, K[9] ready:chat, K[10] signal:chat; A[1] id, A[2] kind,
-- A[3] tenant, A[4] lane, A[5] request id, A[6] now, A[7] payload, A[8] lease deadline,
-- A[9] max_queue, A[10] dispatch, A[11] prefix, A[12] hand-off lease. Two tables for the whole
-- call: each job sets its own entries (none of the functions keeps them).
local K = { false, KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], false, false, KEYS[6], KEYS[7] }
local A = { false, 'chat', ARGV[1], false, false, ARGV[2], false, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7] }
local prefix, hand = ARGV[6], nil
-- Whether a job of this call that claims an idle lane may still be handed to an idle worker:
-- not once a look-up found none registered (none registers during the call) or found another
-- lane's job waiting in ready:chat, nor once this call dispatched a job there (ready:chat only
-- grows during the call).
local handing = ARGV[5] == '1'

local function submit(id, lane, request_id, payload)
  local lk = prefix .. 'lane:' .. lane
  K[1], K[7], K[8] = prefix .. 'job:' .. id, lk .. ':active', lk .. ':q'
  A[1], A[4], A[5], A[7] = id, lane, request_id, payload
  -- A taken id (its record pending or finished) is refused, whatever its lane holds, and nothing
  -- is written. Checked first: `lane_admit` then need not read the record.
  if redis.call('EXISTS', K[1]) == 1 then
    return {0}
  end
  local answer, active_job, waiting = lane_admit(K[7], K[8], false, id, A[9])
  if answer and answer[1] == 'full' then
    return {0, 'full'}
  end
  -- An idle chat worker, when this job claims an idle lane and no other lane's job waits.
  if handing and not answer and not active_job then
    local worker = redis.call('ZRANGEBYSCORE', prefix .. 'idle:chat', A[6], '+inf', 'LIMIT', '0', '1')[1]
    if worker and redis.call('LLEN', K[9]) == 0 then
      hand = hand or chat_hand_fns()
      return hand(K, A, worker, waiting)
    end
    handing = false
  end
  local seq = add_job(K, A)
  if not answer then
    answer = lane_append(K[4], K[5], K[6], K[7], K[8], K[9], K[10], id, lane, A[8], A[10], active_job, waiting)
    if answer[1] == 'claimed' then
      handing = false
    end
  end
  table.insert(answer, 1, seq)
  return answer
end

local reply, k = {}, 0
for i = 8, #ARGV, 4 do
  -- Each job on its own: a command that fails for one job (a key of the wrong type, say) makes
  -- {'error', message} its answer, and the call's other jobs go on, those before it accepted as
  -- answered. What the failed job wrote before its error stays, as it did when each job had a
  -- call of its own (the lane's reads come before any write).
  local ok, answer = pcall(submit, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  if not ok then
    answer = { 'error', type(answer) == 'table' and answer.err or tostring(answer) }
  end
  reply[k + 1] = #answer
  for j = 1, #answer do
    reply[k + 1 + j] = answer[j]
  end
  k = k + 1 + #answer
end
return reply
