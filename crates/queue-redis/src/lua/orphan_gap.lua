-- How many non-chat pending jobs no list or lease accounts for: a cheap test that lets the
-- periodic orphan sweep skip its full pass (counts only, no member is read: O(1), and O(log n)
-- for `inflight`).
-- KEYS[1..3] pending:<kind> of upload, exam, profile_update; KEYS[4..6] ready:<kind> of the
--   same kinds; KEYS[7] inflight; KEYS[8] delayed
-- Returns pending - (ready + inflight + delayed). Above 0, some pending job is in no list: an
-- orphan. 0 or below means none, unless a duplicate list entry (which claims drop) hides one;
-- the full pass (`scan_pending_*`) finds those too.
local pending = 0
for i = 1, 3 do
  pending = pending + redis.call('ZCARD', KEYS[i])
end
-- Leases have finite deadlines: the count leaves out `inflight`'s one member that is no job
-- (inflight_keeper.lua, score +inf).
local held = redis.call('ZCOUNT', KEYS[7], '-inf', '(+inf') + redis.call('ZCARD', KEYS[8])
for i = 4, 6 do
  held = held + redis.call('LLEN', KEYS[i])
end
return pending - held
