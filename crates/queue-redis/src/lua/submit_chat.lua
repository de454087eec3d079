-- Submits one chat job in one atomic call (job_create_fn.lua and the lane store's common.lua and
-- enqueue_fn.lua are prepended): the lane's verdict first (`lane_admit`, which writes nothing),
-- then the record (`create_job`), then its place in the lane (`lane_append`: at the back of the
-- waiting jobs, or claimed at once in an idle lane and dispatched), as the lane store's
-- `enqueue` makes it (a job handed to an idle worker: its place in the lane, then its record,
-- see below; one script either way). Nothing is written when the id is taken or the lane is full.
-- KEYS[1] job hash, KEYS[2] seq counter, KEYS[3] pending:chat (create_job's), KEYS[4] lanes,
--   KEYS[5] leases, KEYS[6] epoch, KEYS[7] lane active, KEYS[8] lane waiting, KEYS[9] ready:chat,
--   KEYS[10] signal:chat
-- ARGV[1] id, ARGV[2] kind ('chat'), ARGV[3] tenant, ARGV[4] lane, ARGV[5] request id
--   ('' = none), ARGV[6] now (ms), ARGV[7] payload (create_job's); ARGV[8] lease deadline (ms) of
--   an idle lane's claim, ARGV[9] max_queue, ARGV[10] dispatch ('1' or '0') (the lane store's);
--   ARGV[11] tenant prefix (idle:chat and the hand-off lists are built from it), ARGV[12] lease
--   (ms) of a claim handed to an idle worker
-- A job that would claim an idle lane, with dispatch on, goes to a chat worker registered as idle
-- when one is and no other lane's job waits in ready:chat (first come, first served):
-- `hand_new_chat` (handoff_chat_fn.lua) creates it already started for that worker and pushes it
-- onto its hand-off list, instead of the dispatch and wake-up. It is built on first use by
-- `chat_hand_fns` (scripts.rs), so that a submit that hands nothing over does not make its
-- closures.
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
-- An idle chat worker, when this job claims an idle lane and no other lane's job waits.
if not answer and not active_job and ARGV[10] == '1' then
  local worker = redis.call('ZRANGEBYSCORE', ARGV[11] .. 'idle:chat', ARGV[6], '+inf', 'LIMIT', '0', '1')[1]
  if worker and redis.call('LLEN', KEYS[9]) == 0 then
    return chat_hand_fns()(KEYS, ARGV, worker, waiting)
  end
end
-- A taken id (its record pending or finished) gets 0 and nothing is written.
local seq = create_job(KEYS, ARGV)
if seq == 0 then
  return {0}
end
if not answer then
  answer = lane_append(KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
                       id, ARGV[4], ARGV[8], ARGV[10], active_job, waiting)
end
table.insert(answer, 1, seq)
return answer
