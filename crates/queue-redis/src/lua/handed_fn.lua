-- The worker's side of a hand-off, shared by take_handed_fn.lua and take_handed_chat_fn.lua.

-- withdraw_and_read(idle, list, worker): withdraws `worker`'s registration in `idle` and returns
-- what was handed to it and not yet read from its hand-off `list`, each item decoded from JSON;
-- the list is emptied.
local function withdraw_and_read(idle, list, worker)
  redis.call('ZREM', idle, worker)
  local items = redis.call('LRANGE', list, 0, -1)
  if #items > 0 then
    redis.call('DEL', list)
  end
  for i, item in ipairs(items) do
    items[i] = cjson.decode(item)
  end
  return items
end

-- claimed_values(h): a handed record's CLAIM_FIELDS values as `read_claim` gives them, false (not
-- cjson.null) for a field the hash lacks; changes `h` and returns it.
local function claimed_values(h)
  for i = 1, #h do
    if h[i] == cjson.null then
      h[i] = false
    end
  end
  return h
end
