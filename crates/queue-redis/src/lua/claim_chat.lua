-- Claims up to N chat dispatches that are still current, for a chat worker's fetch loop
-- (batch_fn.lua, the generated read_claim, start_chat_fn.lua, claim_chat_fn.lua, handed_fn.lua
-- and take_handed_chat_fn.lua are prepended). First withdraws the worker's idle registration and
-- takes the jobs handed to it meanwhile (take_handed_chat, with a full lease); when all of that comes to fewer than
-- N and ARGV[6] is '1', registers the worker as idle until ARGV[7], so that the next chat submit
-- that claims an idle lane hands the worker its job (hand_new_chat, handoff_chat_fn.lua).
-- KEYS[1] ready:chat  KEYS[2] stats  KEYS[3] leases  KEYS[4] idle:chat
-- KEYS[5] handoff:chat:<worker>
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] tenant prefix  ARGV[4] claim TTL (ms)  ARGV[5] worker id
-- ARGV[6] register ('1' or '0')  ARGV[7] registration deadline (ms)
-- Returns one flat array: how many of the answers were handed to the worker (they come first),
-- then the `start_chat` answers, each its parts in the array itself: 'run', epoch, lane,
-- deadline and the claimed record's CLAIM_COUNT values, or 'finish', epoch, lane, deadline, job.
local n = tonumber(ARGV[1])
local out = take_handed_chat(ARGV[3], KEYS[4], KEYS[5], ARGV[5], KEYS[3], decimal(tonumber(ARGV[2]) + tonumber(ARGV[4])))
local handed = #out
local b = new_batch()
for _, c in ipairs(claim_chat(b, KEYS[1], KEYS[2], KEYS[3], ARGV[3], n - #out, tonumber(ARGV[2]), tonumber(ARGV[4]))) do
  out[#out + 1] = c
end
flush_batch(b)
if #out < n and ARGV[6] == '1' then
  -- Registrations past their deadline are of workers that died or stopped without withdrawing.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[5])
end
-- Flat: the answers' parts in the array itself (append_chat_answers, start_chat_fn.lua).
local reply = { handed }
append_chat_answers(reply, 1, out)
return reply
