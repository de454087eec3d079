-- Direct hand-off of a chat job to an idle chat worker, the producer's side (handoff_fn.lua and
-- handoff_new_fn.lua are the same for the other kinds): used by submit_chat.lua inside its
-- `chat_hand_fns` (scripts.rs), after the generated `new_claim`; `add_job` (job_create_fn.lua)
-- and the lane store's `lane_append` (enqueue_fn.lua) are at the script's top.
-- A chat worker whose claim found fewer dispatches than it asked for registers in idle:chat and
-- blocks on handoff:chat:<worker> as well as on signal:chat. A chat submit whose job would claim
-- an idle lane, and that finds a worker registered and no other lane's job waiting in ready:chat,
-- creates the job already started for that worker (`hand_new_chat`) instead of creating it
-- queued and dispatching its claim, and pushes the start onto the worker's list: its `BLPOP`
-- returns the job itself. The lane's claim is made with a short lease, the hand-off lease
-- (`RedisBackendConfig::short_lease`), when that is shorter than the claim TTL: it bounds how
-- long a job handed to a worker that died while registered waits for the lane reaper; the
-- worker lengthens it to the claim TTL while the job runs.

-- hand_new_chat(K, A, w, waiting) (K and A submit_chat.lua's keys and arguments of the job, whose
-- id it has found free; `waiting`, the idle lane's waiting jobs that `lane_admit` counted):
-- claims the lane for the job (`lane_append`, no dispatch) until the earlier of the claim TTL's
-- deadline and the hand-off lease's, and writes what `create_job`, `lane_append`
-- and then a start of the claim (start_chat_fn.lua) would leave: the record `processing` under
-- the claim's epoch, attempt 1, its sequence number and pending index, the chat `processing`
-- count, the worker's registration withdrawn; then pushes {'run', epoch, lane, deadline, the
-- record's CLAIM_FIELDS values (null for a field it lacks)} onto the worker's hand-off list as
-- JSON, as `start_chat` answers a claim. The list expires with the lease should no one ever read
-- it. Not made: the record written queued and then read back and written again, the lease
-- written twice, the batch's functions. Returns submit_chat's answer: {seq, 'claimed', 0, size,
-- epoch}.
local function hand_new_chat(K, A, w, waiting)
  local prefix, id, lane, now, lease = A[11], A[1], A[4], tonumber(A[6]), tonumber(A[12])
  local deadline = A[8]
  if now + lease < tonumber(deadline) then
    deadline = string.format('%d', now + lease)
  end
  local answer = lane_append(K[4], K[5], K[6], K[7], K[8], K[9], K[10], id, lane, deadline, '0', false, waiting)
  local epoch = answer[4]
  local seq, _, fixed = add_job(K, A, epoch)
  redis.call('ZREM', prefix .. 'idle:chat', w)
  redis.call('HINCRBY', prefix .. 'stats', 'count:chat:processing', 1)
  local values = new_claim(id, A[6], fixed, A[7], epoch)
  local list = prefix .. 'handoff:chat:' .. w
  redis.call('RPUSH', list, cjson.encode({ 'run', epoch, lane, deadline, values }))
  redis.call('PEXPIRE', list, string.format('%d', math.max(tonumber(deadline) - now, 1)))
  table.insert(answer, 1, seq)
  return answer
end
