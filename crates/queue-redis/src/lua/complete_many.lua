-- Records the outcomes of several non-chat jobs, each fenced on its own (it is refused and
-- counted unless the job is `processing` under the caller's epoch), and claims the next jobs in
-- the same call (claim_plain_fn.lua, record_outcome_fn.lua are prepended). One call for what
-- many job slots finished at about the same time.
-- KEYS[1] inflight  KEYS[2] finished  KEYS[3] stats  KEYS[4] delayed  KEYS[5] finished:meta
-- ARGV[1] now  ARGV[2] retention (ms)  ARGV[3] lease (ms) of the claims  ARGV[4] tenant prefix
-- then 7 per job: id, epoch, outcome (done | failed | retry), result JSON or error, due (ms, a
-- retry), kind, how many jobs of the kind to claim next (0 or more)
-- Returns, per job, {`ok` | `notfound` | `stale:<current epoch>`, claimed records (HGETALL each)}.
local now, retention, lease, prefix = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local out = {}
for i = 5, #ARGV, 7 do
  local id, epoch, outcome, value, due, kind, n =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local jk = prefix .. 'job:' .. id
  local f = redis.call('HMGET', jk, 'status', 'epoch')
  local answer
  if not f[1] then
    answer = 'notfound'
    n = 0
  elseif f[1] ~= 'processing' or f[2] ~= epoch then
    redis.call('HINCRBY', KEYS[3], 'fenced', 1)
    answer = 'stale:' .. (f[2] or '0')
  else
    record_outcome(jk, KEYS[1], prefix .. 'pending:' .. kind, KEYS[2], KEYS[3], KEYS[4], KEYS[5], id,
                   outcome, value, ARGV[1], retention, due, kind)
    answer = 'ok'
  end
  local claimed = {}
  if n > 0 then
    claimed = claim_plain(prefix .. 'ready:' .. kind, KEYS[1], KEYS[3], n, now, lease, prefix, kind)
  end
  out[#out + 1] = { answer, claimed }
end
return out
