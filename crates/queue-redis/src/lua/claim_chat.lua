-- Claims up to N chat dispatches that are still current (batch_fn.lua, the generated read_claim,
-- start_chat_fn.lua and claim_chat_fn.lua are prepended).
-- KEYS[1] ready:chat  KEYS[2] stats  KEYS[3] leases
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] tenant prefix  ARGV[4] claim TTL (ms)
-- Returns an array of `start_chat` answers: {'run', epoch, lane, deadline, claimed record} or
-- {'finish', epoch, lane, deadline, job}.
local b = new_batch()
local out = claim_chat(b, KEYS[1], KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4]))
flush_batch(b)
return out
