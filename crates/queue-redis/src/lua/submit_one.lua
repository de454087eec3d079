-- Submits one non-chat job (a lone producer's submit, the common case): `create_job`
-- (job_create_fn.lua), its ready-list push and a hand-off or a wake-up (wake_fn.lua), as
-- submit_plain.lua does for a batch, with the same keys, arguments and answer for one job.
-- A script of its own because the body of a script runs afresh at every call: each function it
-- defines is a new closure each time, and every table and closure is garbage Redis's Lua
-- collects later. This one defines only `write_job`, `add_job`, `create_job`, `wake`,
-- `handoff_fns` and `hand_new_fns` (scripts.rs): the batch's functions (batch_fn.lua) and the hand-off's are made
-- inside `handoff_fns`, and `hand_new` with the little it needs inside `hand_new_fns`, each
-- called only when an idle worker is registered.
-- With an idle worker and no job of its kind ready ahead of it, the job is created already
-- claimed for that worker (`hand_new`, handoff_new_fn.lua): the same records as `create_job`
-- then `hand_off`, in fewer commands.
-- KEYS[1] seq counter
-- ARGV[1] tenant, ARGV[2] now (ms), ARGV[3] tenant prefix, ARGV[4] lease (ms) of a job handed to
--   an idle worker, ARGV[5] id, ARGV[6] kind, ARGV[7] lane ('' = none), ARGV[8] request id
--   ('' = none), ARGV[9] payload (JSON text)
-- Returns the job's new seq (>= 1), or 0 when its id is taken (nothing written): a number, not
-- a table (Redis looks up seven special fields in every table a script returns).
local prefix, id, kind = ARGV[3], ARGV[5], ARGV[6]
local K = { prefix .. 'job:' .. id, KEYS[1], prefix .. 'pending:' .. kind }
local A = { id, kind, ARGV[1], ARGV[7], ARGV[8], ARGV[2], ARGV[9] }
local ready = prefix .. 'ready:' .. kind
-- The idle worker of `kind` registered longest whose registration has not run out, if any.
local worker = redis.call('ZRANGEBYSCORE', prefix .. 'idle:' .. kind, ARGV[2], '+inf', 'LIMIT', '0', '1')[1]
if worker and redis.call('LLEN', ready) == 0 then
  return hand_new_fns()(K, A, prefix, tonumber(ARGV[2]), tonumber(ARGV[4]), worker)
end
local seq = create_job(K, A)
if seq > 0 then
  redis.call('RPUSH', ready, id)
  if not (worker and handoff_fns()(prefix, kind, tonumber(ARGV[2]), tonumber(ARGV[4]), worker)) then
    wake(prefix .. 'signal:' .. kind, 1)
  end
end
return seq
