-- Counts one kind's jobs per state, in one atomic read.
-- KEYS[1] stats hash, KEYS[2] pending:<kind>, KEYS[3..5] finished:<kind>:done, :failed, :cancelled
-- ARGV[1] the kind's running counter (`count:<kind>:processing`)
-- Returns {running, pending, done, failed, cancelled}; queued is pending less running.
return {
  tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0,
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
}
