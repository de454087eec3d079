-- Shared by claim_chat.lua and complete_many.lua (start_chat_fn.lua is prepended before it):
-- claims up to n chat dispatches (`epoch|job|lane`, pushed by the lane store's scripts and by
-- complete_many) from the front of `ready`. A dispatch is current only while the lane's active
-- claim still names that job and epoch; stale ones are dropped.
-- b: the batch (batch_fn.lua) that gathers the counter and lease-index writes (the caller
-- flushes it); stats, leases: keys; prefix: the tenant's key prefix; now (ms); ttl: the claim
-- TTL (ms).
-- A dispatch may have waited in the ready list for most of its lease; running it restarts the
-- lease, so the reaper cannot hand out a job a worker has just started.
-- Returns an array of `start_chat` answers: {'run', epoch, lane, deadline, claimed record} or
-- {'finish', epoch, lane, deadline, job}.
local function claim_chat(b, ready, stats, leases, prefix, n, now, ttl)
  local out = {}
  while #out < n do
    local entries = redis.call('LPOP', ready, n - #out)
    if not entries then break end
    for _, entry in ipairs(entries) do
      local epoch, job, lane = string.match(entry, '^(%d+)|([^|]+)|(.+)$')
      if epoch then
        local active = redis.call('HMGET', prefix .. 'lane:' .. lane .. ':active', 'job', 'epoch', 'deadline')
        if active[1] == job and active[2] == epoch then
          out[#out + 1] = start_chat(b, prefix, stats, leases, job, epoch, lane, now, ttl, active[3])
        end
      end
    end
  end
  return out
end
