-- Submits a non-chat job in one step: creates its record (`create_job`, job_create_fn.lua),
-- puts it on its ready list and wakes one idle worker.
-- KEYS[1..6] and ARGV[1..7] as `create_job`; KEYS[7] ready:<kind>, KEYS[8] signal:<kind>.
-- Returns the new seq (>= 1), or 0 when the id is taken (nothing written).
local seq = create_job(KEYS, ARGV)
if seq == 0 then
  return 0
end
redis.call('RPUSH', KEYS[7], ARGV[1])
redis.call('LPUSH', KEYS[8], '1')
redis.call('LTRIM', KEYS[8], 0, 63)
return seq
