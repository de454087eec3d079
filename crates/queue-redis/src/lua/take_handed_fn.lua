-- Direct hand-off to idle workers (handoff_fn.lua), the worker's side: used by claim_plain.lua
-- (after batch_fn.lua, the generated read_claim and claim_plain_fn.lua, for INFLIGHT_KEEPER).
-- take_handed(b, prefix, idle, list, worker, inflight, deadline): withdraws `worker`'s
-- registration and takes what was handed to it and not yet read from `list`: each job still
-- `processing` under the epoch it was handed with gets the worker's full lease (`deadline`,
-- through the batch `b`) and is returned, as claim_plain returns its claims; a job whose short
-- lease ran out and was queued again meanwhile is dropped.
local function take_handed(b, prefix, idle, list, worker, inflight, deadline)
  redis.call('ZREM', idle, worker)
  local out = {}
  local items = redis.call('LRANGE', list, 0, -1)
  if #items == 0 then
    return out
  end
  redis.call('DEL', list)
  for _, item in ipairs(items) do
    local h = cjson.decode(item)
    h[#h] = nil
    for i = 1, #h do
      if h[i] == cjson.null then
        h[i] = false
      end
    end
    local id = h[CLAIM_ID]
    local now = redis.call('HMGET', prefix .. 'job:' .. id, 'status', 'epoch')
    if now[1] == 'processing' and now[2] == h[CLAIM_EPOCH] then
      if #out == 0 then
        batch_zadd(b, inflight, '+inf', INFLIGHT_KEEPER)
      end
      batch_zadd(b, inflight, deadline, id)
      out[#out + 1] = h
    end
  end
  return out
end
