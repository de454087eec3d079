-- Shared by claim_plain.lua and complete_many.lua: claims up to n ready jobs of one non-chat kind,
-- atomically with their state change and lease, so a job is never held by nobody: it is in the
-- ready list, or in `inflight` under a lease. Job hashes are built from the tenant prefix: they
-- share the tenant's hash tag, hence the slot. Returns an array of records as `read_claim` gives
-- them (the values of CLAIM_FIELDS, store.rs, in its order: no field names), as they stand after
-- the claim.
-- The leases (`inflight`) and the `processing` counter are written through the batch `b`
-- (batch_fn.lua): the caller flushes it, before any read of `inflight`.
-- `INFLIGHT_KEEPER` (inflight_keeper.lua) is prepended.
-- Appends the values of claimed records (as claim_plain returns them) to the flat array `reply`
-- after its position `k`, CLAIM_COUNT each, in the array itself: a table in a script's reply
-- costs its conversion seven look-ups of special fields first. Returns the new last position.
local function append_records(reply, k, records)
  for _, r in ipairs(records) do
    for j = 1, CLAIM_COUNT do
      reply[k + j] = r[j]
    end
    k = k + CLAIM_COUNT
  end
  return k
end

local function claim_plain(b, ready, inflight, stats, n, now, lease, prefix, kind)
  local out, taken, started = {}, {}, 0
  local deadline, updated = decimal(now + lease), decimal(now)
  while #out < n do
    local ids = redis.call('LPOP', ready, n - #out)
    if not ids then break end
    for _, id in ipairs(ids) do
      local jk = prefix .. 'job:' .. id
      -- One read serves the checks and the answer: the state the claim writes is patched in the
      -- reply (read_claim and the CLAIM_ positions are generated from CLAIM_FIELDS).
      local h = read_claim(jk, id)
      local st, epoch, attempt = state_parts(h[CLAIM_STATE])
      -- A duplicate entry of a job that a live worker holds, or of a finished job, is dropped;
      -- so is a second entry of a job this call took (its lease is still in `b`).
      local live = st == 'processing' and redis.call('ZSCORE', inflight, id)
      if not taken[id] and (st == 'queued' or (st == 'processing' and (not live or tonumber(live) <= now))) then
        local state = 'processing|' .. successor(epoch) .. '|' .. successor(attempt) .. '|' .. updated
        redis.call('HSET', jk, 'state', state)
        if st == 'queued' then
          started = started + 1
        end
        if #out == 0 then
          batch_zadd(b, inflight, '+inf', INFLIGHT_KEEPER)
        end
        batch_zadd(b, inflight, deadline, id)
        taken[id] = true
        h[CLAIM_STATE] = state
        out[#out + 1] = h
      end
    end
  end
  if started > 0 then
    batch_incr(b, stats, 'count:' .. kind .. ':processing', started)
  end
  return out
end
