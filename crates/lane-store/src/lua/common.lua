-- Prepended to every lane script that changes a claim.
--
-- Numbers travel as decimal strings (ARGV in, string.format('%d') out) so that no epoch or
-- millisecond deadline ever goes through a float-to-string conversion inside Redis.

-- Claims `job` for `lane` under the next store-wide epoch, until `deadline`; returns the epoch.
-- `add_lease`, when given, writes the lease-index entry instead of a ZADD of its own (the Redis
-- backend's complete_many gathers them into one command per call).
local function claim(active_key, leases_key, epoch_key, job, lane, deadline, add_lease)
  local epoch = string.format('%d', redis.call('INCR', epoch_key))
  redis.call('HSET', active_key, 'job', job, 'epoch', epoch, 'deadline', deadline)
  if add_lease then
    add_lease(leases_key, deadline, lane)
  else
    redis.call('ZADD', leases_key, deadline, lane)
  end
  return epoch
end

-- With dispatch on ('1'), hands the new claim to the Redis backend's chat workers in the same
-- script as the claim itself, so a claim can never be lost between the lane store and the queue.
-- The entry is `<epoch>:<deadline>|<job>|<lane>` (`dispatch_entry`; `parse_dispatch` in
-- redis_store.rs reads it): the claim's lease deadline travels with it, so that the worker that
-- claims it knows how much of the lease is left without reading the lane's claim.
local function dispatch_entry(epoch, deadline, job, lane)
  return epoch .. ':' .. deadline .. '|' .. job .. '|' .. lane
end

local function push_dispatch(on, ready_key, signal_key, epoch, deadline, job, lane)
  if on == '1' then
    redis.call('RPUSH', ready_key, dispatch_entry(epoch, deadline, job, lane))
    -- Tokens beyond 64 would wake no one more; the list is cut back to 64 only when a push
    -- takes it past 128, so a push onto a full list is one command 63 times in 64 (as the
    -- Redis backend's `wake` does).
    if redis.call('LPUSH', signal_key, '1') > 128 then
      redis.call('LTRIM', signal_key, '0', '63')
    end
  end
end

-- nil when the lane's active claim is (`job`, `epoch`); otherwise the lane's current epoch
-- ('0' when nothing runs), for the caller's StaleLease error.
local function stale(active_key, job, epoch)
  local current = redis.call('HMGET', active_key, 'job', 'epoch')
  if current[1] == job and current[2] == epoch then
    return nil
  end
  return current[2] or '0'
end
