-- Creates one job record: `create_job` (job_create_fn.lua) with KEYS and ARGV as described there.
return create_job(KEYS, ARGV)
