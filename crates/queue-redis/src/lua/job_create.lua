-- Creates one job record: `create_job` (job_create_fn.lua) with KEYS and ARGV as described there.
-- The seq alone (create_job also gives its text).
return (create_job(KEYS, ARGV))
