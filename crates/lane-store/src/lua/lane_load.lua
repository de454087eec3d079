-- lane_load: a lane's occupancy, read atomically.
-- KEYS: 1 lane active, 2 lane waiting
-- Returns {active (0 or 1), queued}.
return {redis.call('EXISTS', KEYS[1]), redis.call('LLEN', KEYS[2])}
