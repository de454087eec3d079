-- Submits one or more non-chat jobs in one call (batch_fn.lua and job_create_fn.lua are
-- prepended), with the effect of `create_job` and a ready-list push for each, in order, but with
-- the per-job work cut to two commands (EXISTS and HSET): the sequence numbers come from one
-- INCRBY, and each kind gets one ZADD to its pending index, one RPUSH to its ready list and one
-- wake-up with as many tokens as jobs of that kind (at most 64), so that as many idle workers
-- wake as there is work for.
-- A job whose id is taken, by an existing record or by an earlier job of this call, gets 0 and
-- nothing is written for it; the others get consecutive sequence numbers in their order.
-- A call holds at most MAX_SUBMIT_BATCH (1,000) jobs, so each multi-member command's `unpack`
-- stays far below Lua's stack limit.
-- KEYS[1] seq counter
-- ARGV[1] tenant, ARGV[2] now (ms), ARGV[3] tenant prefix; then 5 per job: id, kind, lane
--   ('' = none), request id ('' = none), payload (JSON text)
-- Returns, per job, its new seq (>= 1), or 0 when its id is taken.
local prefix = ARGV[3]
-- One job (a lone producer's submit, the common case): `create_job` itself, then the ready list
-- and a wake-up, without the tables that gather a batch's writes, which cost a single job more
-- than its commands do.
if #ARGV == 8 then
  local id, kind = ARGV[4], ARGV[5]
  local seq = create_job({ prefix .. 'job:' .. id, KEYS[1], prefix .. 'pending:' .. kind },
    { id, kind, ARGV[1], ARGV[6], ARGV[7], ARGV[2], ARGV[8] })
  if seq > 0 then
    redis.call('RPUSH', prefix .. 'ready:' .. kind, id)
    wake(prefix .. 'signal:' .. kind, 1)
  end
  return { seq }
end
-- out: the answer per job (0 until numbered); fresh: {answer position, first ARGV} of each new job.
local out, fresh, seen = {}, {}, {}
for i = 4, #ARGV, 5 do
  local id = ARGV[i]
  out[#out + 1] = 0
  if not seen[id] and redis.call('EXISTS', prefix .. 'job:' .. id) == 0 then
    seen[id] = true
    fresh[#fresh + 1] = { #out, i }
  end
end
if #fresh == 0 then
  return out
end
local seq = redis.call('INCRBY', KEYS[1], #fresh) - #fresh
-- Per kind, in order of first appearance: how many new jobs (the wake-up's tokens).
local b, kinds, count = new_batch(), {}, {}
for _, f in ipairs(fresh) do
  local at, i = f[1], f[2]
  local id, kind = ARGV[i], ARGV[i + 1]
  seq = seq + 1
  out[at] = seq
  local text = string.format('%d', seq)
  redis.call('HSET', prefix .. 'job:' .. id,
    unpack(job_fields(id, kind, ARGV[1], ARGV[i + 2], ARGV[i + 3], ARGV[2], ARGV[i + 4], text)))
  batch_zadd(b, prefix .. 'pending:' .. kind, text, id)
  batch_rpush(b, prefix .. 'ready:' .. kind, id)
  if not count[kind] then
    count[kind] = 0
    kinds[#kinds + 1] = kind
  end
  count[kind] = count[kind] + 1
end
flush_batch(b)
for _, kind in ipairs(kinds) do
  wake(prefix .. 'signal:' .. kind, count[kind])
end
return out
