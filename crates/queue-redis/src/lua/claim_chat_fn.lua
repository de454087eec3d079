-- Shared by claim_chat.lua and complete_many.lua (start_chat_fn.lua is prepended before it):
-- claims up to n chat dispatches (`epoch:deadline|job|lane`, pushed by the lane store's scripts
-- and by complete_many) from the front of `ready`. A dispatch is current only while the lane's
-- active claim still names that job and epoch; stale ones are dropped. Whether it is is read off
-- the job's record, which the start reads anyway (`start_chat`, `fenced` true): a claim is only
-- ever taken from a job whose record is `queued` or `processing` by the reaper, which writes its
-- new epoch into the record (the lane store's reap.lua), so the record's epoch is never above a
-- current dispatch's and always above a stale one's. A dispatch pushed before the deadline was
-- part of the entry (`epoch|job|lane`) is checked against the lane's claim, which it reads.
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
      -- Taken apart by plain searches for '|' (a pattern match costs Redis several times as much).
      local j = string.find(entry, '|', 1, true)
      local l = j and string.find(entry, '|', j + 1, true)
      if l then
        local head, job, lane = string.sub(entry, 1, j - 1), string.sub(entry, j + 1, l - 1), string.sub(entry, l + 1)
        local c = string.find(head, ':', 1, true)
        local answer
        if c then
          answer = start_chat(b, prefix, stats, leases, job, string.sub(head, 1, c - 1), lane, now, ttl,
                              string.sub(head, c + 1), false, true)
        else
          local active = redis.call('HMGET', prefix .. 'lane:' .. lane .. ':active', 'job', 'epoch', 'deadline')
          if active[1] == job and active[2] == head then
            answer = start_chat(b, prefix, stats, leases, job, head, lane, now, ttl, active[3])
          end
        end
        if answer then
          out[#out + 1] = answer
        end
      end
    end
  end
  return out
end
