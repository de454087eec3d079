-- How many pending chat jobs no lane accounts for: the chat half of the orphan sweep's cheap
-- test (one call; O(active lanes), no record is read).
-- KEYS[1] pending:chat  KEYS[2] lanes (the active lanes)  ARGV[1] the tenant's key prefix
-- Returns pending - (active claims + waiting jobs) over the active lanes. Above 0, some pending
-- chat job is in no lane: an orphan.
local held = 0
for _, lane in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('HEXISTS', ARGV[1] .. 'lane:' .. lane .. ':active', 'job') == 1 then
    held = held + 1
  end
  held = held + redis.call('LLEN', ARGV[1] .. 'lane:' .. lane .. ':q')
end
return redis.call('ZCARD', KEYS[1]) - held
