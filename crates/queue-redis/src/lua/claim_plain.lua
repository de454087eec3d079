-- Claims up to N ready jobs of one non-chat kind (batch_fn.lua, the generated read_claim and
-- claim_plain_fn.lua are prepended).
-- KEYS[1] ready:<kind>  KEYS[2] inflight  KEYS[3] stats
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] lease (ms)  ARGV[4] tenant prefix  ARGV[5] kind
-- Returns an array of claimed records, one per claimed job: each the values of CLAIM_FIELDS
-- (store.rs) in its order, as after the claim (`read_claim`, patched).
local b = new_batch()
local out = claim_plain(b, KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[4], ARGV[5])
flush_batch(b)
return out
