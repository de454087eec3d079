-- Deletes one batch of finished records of one kind and state that finished strictly before a
-- cut-off, with their entries in that state's index (state_fn.lua is prepended).
-- KEYS[1] the index: finished:<kind>:<status>
-- ARGV[1] cut-off (ms, exclusive), ARGV[2] batch size, ARGV[3] prefix of job hash keys
--   (`lw:{tenant}:job:`), ARGV[4] kind, ARGV[5] status. The job hashes are named from the
--   indexed ids, so they cannot be passed in KEYS; they carry the same hash tag as KEYS, so they
--   live in the same Cluster slot.
-- An entry whose hash has expired by TTL, or whose id was submitted again since (the hash is
-- another record now, in another state), only leaves the index.
-- Returns { records deleted, index entries examined }; fewer examined than the batch size means
-- the backlog is empty.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local purged = 0
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local kind, state = kind_and_state(key)
  if kind == ARGV[4] and state_status(state) == ARGV[5] then
    redis.call('DEL', key)
    purged = purged + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return { purged, #ids }
