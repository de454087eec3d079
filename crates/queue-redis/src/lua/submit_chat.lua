-- Submits one chat job in one atomic call (job_create_fn.lua and the lane store's common.lua and
-- enqueue_fn.lua are prepended): the lane's verdict first (`lane_admit`, which writes nothing),
-- then the record (`create_job`), then its place in the lane (`lane_append`: at the back of the
-- waiting jobs, or claimed at once in an idle lane and dispatched), as the lane store's
-- `enqueue` makes it. Nothing is written when the id is taken or the lane is full.
-- KEYS[1] job hash, KEYS[2] seq counter, KEYS[3] pending:chat (create_job's), KEYS[4] lanes,
--   KEYS[5] leases, KEYS[6] epoch, KEYS[7] lane active, KEYS[8] lane waiting, KEYS[9] ready:chat,
--   KEYS[10] signal:chat
-- ARGV[1] id, ARGV[2] kind ('chat'), ARGV[3] tenant, ARGV[4] lane, ARGV[5] request id
--   ('' = none), ARGV[6] now (ms), ARGV[7] payload (create_job's); ARGV[8] lease deadline (ms) of
--   an idle lane's claim, ARGV[9] max_queue, ARGV[10] dispatch ('1' or '0') (the lane store's);
--   ARGV[11] tenant prefix (idle:chat and the hand-off lists are built from it), ARGV[12] lease
--   (ms) of a claim handed to an idle worker
-- An idle lane's claim, with dispatch on, goes to a chat worker registered as idle when one is
-- and no other lane's job waits in ready:chat (first come, first served): `hand_chat`
-- (handoff_chat_fn.lua) starts it for that worker and pushes it onto its hand-off list, instead
-- of the dispatch and wake-up. Its functions are built on first use by `chat_handoff_fns`
-- (scripts.rs), so that a submit that hands nothing over does not make their closures.
-- Returns the new seq followed by the enqueue's answer: {seq, 'queued', position, size},
-- {seq, 'claimed', 0, size, epoch}, or {seq, 'running' | 'waiting', position, size} (a job of
-- that id was already in the lane and stays where it is; the record is new). {0} when the id is
-- taken, {0, 'full'} when the lane is full: nothing written.
local id = ARGV[1]
local answer, active_job, waiting = lane_admit(KEYS[7], KEYS[8], KEYS[1], id, ARGV[9])
if answer and answer[1] == 'full' then
  -- A taken id is refused as taken, whatever its lane holds: the record is checked first.
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return {0}
  end
  return {0, 'full'}
end
-- A taken id (its record pending or finished) gets 0 and nothing is written.
local seq = create_job(KEYS, ARGV)
if seq == 0 then
  return {0}
end
if not answer then
  -- An idle chat worker, when this job claims an idle lane and no other lane's job waits.
  local prefix, worker = ARGV[11], nil
  if not active_job and ARGV[10] == '1' then
    worker = redis.call('ZRANGEBYSCORE', prefix .. 'idle:chat', ARGV[6], '+inf', 'LIMIT', '0', '1')[1]
    if worker and redis.call('LLEN', KEYS[9]) > 0 then
      worker = nil
    end
  end
  answer = lane_append(KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
                       id, ARGV[4], ARGV[8], worker and '0' or ARGV[10], active_job, waiting)
  if worker and not chat_handoff_fns()(prefix, worker, id, answer[4], ARGV[4], tonumber(ARGV[6]), ARGV[8],
      tonumber(ARGV[12])) then
    -- Not started (its record was not queued): dispatched as it would have been.
    push_dispatch('1', KEYS[9], KEYS[10], answer[4], id, ARGV[4])
  end
end
table.insert(answer, 1, seq)
return answer
