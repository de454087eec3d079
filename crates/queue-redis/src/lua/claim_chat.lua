-- Claims up to N chat dispatches (`epoch|job|lane`, pushed by the lane store's scripts;
-- batch_fn.lua and start_chat_fn.lua are prepended). A dispatch is current only while the lane's active claim
-- still names that job and epoch; stale ones are dropped.
-- KEYS[1] ready:chat  KEYS[2] stats  KEYS[3] leases
-- ARGV[1] n  ARGV[2] now (ms)  ARGV[3] tenant prefix  ARGV[4] claim TTL (ms)
-- A dispatch may have waited in the ready list for most of its lease; running it restarts the
-- lease, so the reaper cannot hand out a job a worker has just started.
-- Returns an array of `start_chat` answers: {'run', epoch, lane, deadline, HGETALL} or
-- {'finish', epoch, lane, deadline, job}.
local out, b = {}, new_batch()
local n = tonumber(ARGV[1])
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[4])
while #out < n do
  local entries = redis.call('LPOP', KEYS[1], n - #out)
  if not entries then break end
  for _, entry in ipairs(entries) do
    local epoch, job, lane = string.match(entry, '^(%d+)|([^|]+)|(.+)$')
    if epoch then
      local active = redis.call('HMGET', ARGV[3] .. 'lane:' .. lane .. ':active', 'job', 'epoch', 'deadline')
      if active[1] == job and active[2] == epoch then
        out[#out + 1] = start_chat(b, ARGV[3], KEYS[2], KEYS[3], job, epoch, lane, now, ttl, active[3])
      end
    end
  end
end
flush_batch(b)
return out
