-- Records the outcomes of several jobs, each fenced on its own, and hands each caller its next
-- job in the same call (batch_fn.lua, wake_fn.lua, the generated read_claim, claim_plain_fn.lua,
-- record_outcome_fn.lua, start_chat_fn.lua, claim_chat_fn.lua and the lane store's common.lua and
-- finish_fn.lua are prepended). One call for what many job
-- slots finished at about the same time.
-- The outcomes go first, their writes to set-wide keys gathered (one command per key, not per
-- job); then the non-chat claims, one per kind for all the callers of that kind, shared out in
-- the callers' order: the ready list is FIFO, so each caller gets the jobs it would have got by
-- claiming right after its own outcome.
-- An outcome is refused (and counted in `fenced`) unless the record is `processing` under the
-- caller's epoch. For a chat job that also means that its lane's active claim is still that job
-- and epoch, which is not read: a chat record is `processing` under the epoch of the claim that
-- started it, and its lane's claim leaves that job and epoch only by this script's outcome (the
-- record ends or is queued for a retry), or by the lane reaper, which writes its new epoch into
-- the record (the lane store's reap.lua).
-- A non-chat job's slot claims up to `n` ready jobs of its kind (finish-and-claim-next). A chat
-- job's final outcome moves its lane on (`finish_lane`): with `n` > 0, and no other lane's job
-- waiting in ready:chat, the lane's next job is started here and handed to the same slot (no
-- dispatch round trip); otherwise it is dispatched to the back of ready:chat for any worker
-- (one RPUSH for all of the call's dispatches). A chat slot with `n` > 0 then claims from the
-- front of ready:chat (claim_chat_fn.lua) what its own lane did not give it, up to `n` jobs in
-- all (a slot claiming ahead asks for two), as the worker's fetch loop would, but without a
-- round trip of its own. Idle workers are woken for what is left of the dispatches.
-- KEYS[1] inflight  KEYS[2] stats  KEYS[3] delayed  KEYS[4] lanes  KEYS[5] leases  KEYS[6] epoch
-- KEYS[7] ready:chat  KEYS[8] signal:chat
-- ARGV[1] now  ARGV[2] lease (ms) of the non-chat claims (the worker's short lease, which it
-- lengthens while it holds the jobs)  ARGV[3] tenant prefix
-- ARGV[4] claim TTL (ms) of the chat claims (the lane store's)
-- then 9 per job: id, epoch, attempt (the claim's: with the epoch, what the record's state
-- begins with while the claim is current), outcome (done | failed | retry), result JSON or error,
-- due (ms, a non-chat retry), kind, n (how many next jobs to claim), lane ('' for a non-chat job)
-- Returns one flat array: per job, in the calls' order, `ok` | `notfound` | `stale:<current
-- epoch>`, how many non-chat records were claimed for its slot, how many chat jobs were started
-- next for it, then those records (each the values of CLAIM_FIELDS, store.rs, in its order,
-- CLAIM_COUNT values in the array itself) and those `start_chat` answers (its own lane's
-- first, flat too: `append_chat_answers`, start_chat_fn.lua). Flat, because Redis converts every table a
-- script returns by looking up seven special fields in it first (err, ok, double, ...): a
-- {answer, records, chat jobs} table per job cost more than the job's own HSET (callgrind).
local now, lease, prefix, chat_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
-- The lease deadline of the lanes' next claims, as text (see `decimal`).
local next_deadline = decimal(now + chat_ttl)
-- Per job (by its position): its answer; the non-chat records and the chat answers claimed for
-- it (nil: none).
local answers, plain, chat, b = {}, {}, {}, new_batch()
-- The non-chat slots that claim next jobs: their positions, kinds and counts.
local want_at, want_kind, want_n = {}, {}, {}
-- Per kind, the names its outcomes write (built once per call, not per job).
local names = {}
local function names_of(kind)
  local k = names[kind]
  if not k then
    k = { pending = prefix .. 'pending:' .. kind, processing = 'count:' .. kind .. ':processing',
          finished = { done = prefix .. 'finished:' .. kind .. ':done',
                       failed = prefix .. 'finished:' .. kind .. ':failed' } }
    names[kind] = k
  end
  return k
end
-- The lanes' next claims add their lease-index entries through the batch too. A lane moves on
-- at most once per call (only its current job's outcome is accepted), so no later ZREM of the
-- same lane (finish_lane, when it goes idle) can come before its gathered entry is flushed.
local function add_lease(key, deadline, lane)
  batch_zadd(b, key, deadline, lane)
end
-- The jobs' `n` as numbers, by their text (a few values: `tonumber` once each).
local counts = {}
-- The length of ready:chat, read once, and how many chat dispatches this call pushes (with the
-- batch, at its first flush). `chat_wants`: {answer position, how many} of the chat slots that
-- want jobs from ready:chat (what their own lane did not give them).
local waiting, dispatched, chat_wants = nil, 0, {}
for i = 5, #ARGV, 9 do
  local id, epoch, attempt, outcome, value, due, kind, n, lane = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], counts[ARGV[i + 7]], ARGV[i + 8]
  if not n then
    n = tonumber(ARGV[i + 7])
    counts[ARGV[i + 7]] = n
  end
  local jk = prefix .. 'job:' .. id
  local state = job_state(jk)
  -- The fence: the record `processing` under the caller's epoch. Its fast path compares the
  -- state's head with what the caller's claim left there (no pattern match); any other state is
  -- taken apart (the attempt the outcome keeps is then the record's).
  local fenced, current = false, epoch
  local head = 'processing|' .. epoch .. '|' .. attempt .. '|'
  if not state or string.sub(state, 1, #head) ~= head then
    local st, at
    st, current, at = state_parts(state)
    current = current or '0'
    fenced = st ~= 'processing' or current ~= epoch
    attempt = at
  end
  local ak = kind == 'chat' and prefix .. 'lane:' .. lane .. ':active'
  local answer
  local at, chat_next = #answers + 1, nil
  if not state then
    answer = 'notfound'
  else
    if fenced then
      redis.call('HINCRBY', KEYS[2], 'fenced', 1)
      answer = 'stale:' .. current
    else
      record_outcome(b, jk, KEYS[1], names_of(kind), KEYS[2], KEYS[3], id, epoch, attempt, outcome, value, ARGV[1],
        due, kind)
      answer = 'ok'
      if kind == 'chat' and outcome ~= 'retry' then
        -- Straight to this slot only while no other lane's job waits for a worker: lanes are
        -- served first come, first served, and a busy lane cannot keep a slot to itself.
        if n > 0 and not waiting then
          waiting = redis.call('LLEN', KEYS[7])
        end
        local keep = n > 0 and waiting + dispatched == 0
        -- The claim is current (the fence above): finish_lane need not read it again. The
        -- next job's claim is made with the lease it runs under: start_chat leaves it. A next
        -- job for any worker is pushed with the others at the end (finish_lane does not push).
        local moved = finish_lane(KEYS[4], KEYS[5], KEYS[6], ak, prefix .. 'lane:' .. lane .. ':q', KEYS[7],
                                  KEYS[8], id, epoch, lane, next_deadline, '0', true, add_lease)
        if moved[1] == 'next' and keep then
          chat_next = { start_chat(b, prefix, KEYS[2], KEYS[5], moved[2], moved[3], lane, now, chat_ttl,
                                   next_deadline, true) }
        elseif moved[1] == 'next' then
          batch_rpush(b, KEYS[7], dispatch_entry(moved[3], next_deadline, moved[2], lane))
          dispatched = dispatched + 1
        end
        local kept = chat_next and 1 or 0
        if n > kept then
          chat_wants[#chat_wants + 1] = { at, n - kept }
        end
      end
    end
    if kind ~= 'chat' and n > 0 then
      local w = #want_at + 1
      want_at[w], want_kind[w], want_n[w] = at, kind, n
    end
  end
  answers[at] = answer
  if chat_next then
    chat[at] = chat_next
  end
end
flush_batch(b)
if #chat_wants > 0 then
  local asked = 0
  for _, w in ipairs(chat_wants) do
    asked = asked + w[2]
  end
  -- Shared out in the slots' order, each its count, as for the non-chat claims below.
  local started, at = claim_chat(b, KEYS[7], KEYS[2], KEYS[5], prefix, asked, now, chat_ttl), 1
  for _, w in ipairs(chat_wants) do
    local mine = chat[w[1]]
    if not mine then
      mine = {}
      chat[w[1]] = mine
    end
    for _ = 1, w[2] do
      if at > #started then break end
      mine[#mine + 1] = started[at]
      at = at + 1
    end
  end
  dispatched = dispatched - #started
end
if dispatched > 0 then
  wake(KEYS[8], dispatched)
end
local total, kinds = {}, {}
for i, kind in ipairs(want_kind) do
  if not total[kind] then
    total[kind] = 0
    kinds[#kinds + 1] = kind
  end
  total[kind] = total[kind] + want_n[i]
end
local claimed, next_at = {}, {}
for _, kind in ipairs(kinds) do
  claimed[kind] = claim_plain(b, prefix .. 'ready:' .. kind, KEYS[1], KEYS[2], total[kind], now, lease, prefix, kind)
  next_at[kind] = 1
end
flush_batch(b)
for i, at in ipairs(want_at) do
  local kind, n = want_kind[i], want_n[i]
  local list, from = claimed[kind], next_at[kind]
  if from <= #list then
    local mine = {}
    for j = from, math.min(from + n - 1, #list) do
      mine[#mine + 1] = list[j]
    end
    plain[at] = mine
  end
  next_at[kind] = from + n
end
-- The records' and chat answers' parts go into the reply itself (append_records,
-- claim_plain_fn.lua; append_chat_answers, start_chat_fn.lua).
local reply, k = {}, 0
for at = 1, #answers do
  local p, c = plain[at], chat[at]
  reply[k + 1], reply[k + 2], reply[k + 3] = answers[at], p and #p or 0, c and #c or 0
  k = k + 3
  if p then
    k = append_records(reply, k, p)
  end
  if c then
    k = append_chat_answers(reply, k, c)
  end
end
return reply
