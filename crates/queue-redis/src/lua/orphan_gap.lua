-- How many non-chat pending jobs no list or lease accounts for: a cheap test that lets the
-- periodic orphan sweep skip its full pass (O(1): counts only, no member is read).
-- KEYS[1..3] pending:<kind> of upload, exam, profile_update; KEYS[4..6] ready:<kind> of the
--   same kinds; KEYS[7] inflight; KEYS[8] delayed
-- Returns pending - (ready + inflight + delayed). Above 0, some pending job is in no list: an
-- orphan. 0 or below means none, unless a duplicate list entry (which claims drop) hides one;
-- the full pass (`scan_pending_*`) finds those too.
local pending = 0
for i = 1, 3 do
  pending = pending + redis.call('ZCARD', KEYS[i])
end
local held = redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8])
for i = 4, 6 do
  held = held + redis.call('LLEN', KEYS[i])
end
return pending - held
