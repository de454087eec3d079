-- Shared by claim_plain_fn.lua and start_chat_fn.lua (prepended before them): where the fields a
-- start changes sit in a record read with HGETALL (field, value, ...). Returns a table of value
-- positions for `status`, `epoch`, `attempt` and `updated`, so that one read serves both the
-- checks and the answer, patched after the start.
local function start_fields(h)
  local at = {}
  for j = 1, #h, 2 do
    local f = h[j]
    if f == 'status' or f == 'epoch' or f == 'attempt' or f == 'updated' then
      at[f] = j + 1
    end
  end
  return at
end
