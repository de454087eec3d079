-- Claims up to N ready jobs of one non-chat kind for a worker's fetch loop (batch_fn.lua, the
-- generated read_claim, claim_plain_fn.lua, handed_fn.lua and take_handed_fn.lua are prepended).
-- First withdraws the worker's idle registration and takes the jobs handed to it meanwhile
-- (take_handed); when all of that comes to fewer than N jobs and ARGV[7] is '1', registers the
-- worker as idle until ARGV[8], so that the next submit hands it its job (hand_off,
-- handoff_fn.lua).
-- KEYS[1] ready:<kind>  KEYS[2] inflight  KEYS[3] stats  KEYS[4] idle:<kind>
-- KEYS[5] handoff:<kind>:<worker>
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] lease (ms): the worker's short lease, which it lengthens
-- while it holds the jobs  ARGV[4] tenant prefix  ARGV[5] kind
-- ARGV[6] worker id  ARGV[7] register ('1' or '0')  ARGV[8] registration deadline (ms)
-- Returns one flat array: how many of the claimed jobs were handed to the worker (take_handed;
-- they come first), then the claimed records: per claimed job, the values of CLAIM_FIELDS
-- (store.rs) in its order, as after the claim (`read_claim`, patched), CLAIM_COUNT of them.
local n, now, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = new_batch()
local out = take_handed(b, ARGV[4], KEYS[4], KEYS[5], ARGV[6], KEYS[2], decimal(now + lease))
local handed = #out
for _, h in ipairs(claim_plain(b, KEYS[1], KEYS[2], KEYS[3], n - #out, now, lease, ARGV[4], ARGV[5])) do
  out[#out + 1] = h
end
flush_batch(b)
if #out < n and ARGV[7] == '1' then
  -- Registrations past their deadline are of workers that died or stopped without withdrawing.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[8], ARGV[6])
end
-- The records' values in the answer itself (append_records, claim_plain_fn.lua).
local reply = { handed }
append_records(reply, 1, out)
return reply
