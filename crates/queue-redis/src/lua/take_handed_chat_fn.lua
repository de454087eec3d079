-- The worker's side of the chat hand-off (handoff_chat_fn.lua): used by claim_chat.lua (after
-- the generated read_claim, for CLAIM_ID and state_fn.lua's functions, and handed_fn.lua).
-- take_handed_chat(prefix, idle, list, worker, leases, deadline): withdraws `worker`'s
-- registration in idle:chat and takes what was handed to it and not yet read from `list`, each
-- as a claim of ready:chat answers it: {'run', epoch, lane, deadline, record values (false for a
-- field the hash lacks)}, its lane's lease restarted until `deadline` (a full one, text), while
-- the lane's active claim still names the job under that epoch and the record is `processing`
-- under it; {'finish', epoch, lane, deadline, job} when the claim is current but
-- the job is finished or gone (the lane must move on); nothing when the claim is not current
-- (the lane reaper took it back meanwhile) or the record is in any other state (left to the
-- lane's lease and the reaper, which re-claims the lane at its head).
local function take_handed_chat(prefix, idle, list, worker, leases, full)
  local out = {}
  for _, a in ipairs(withdraw_and_read(idle, list, worker)) do
    local epoch, lane, deadline, h = a[2], a[3], a[4], claimed_values(a[5])
    local job = h[CLAIM_ID]
    local ak = prefix .. 'lane:' .. lane .. ':active'
    local active = redis.call('HMGET', ak, 'job', 'epoch')
    if active[1] == job and active[2] == epoch then
      local state = job_state(prefix .. 'job:' .. job)
      local st, now_epoch = state_parts(state)
      if st == 'processing' and now_epoch == epoch then
        redis.call('HSET', ak, 'deadline', full)
        redis.call('ZADD', leases, full, lane)
        out[#out + 1] = { 'run', epoch, lane, full, h }
      else
        local status = state_status(state)
        if not status or status == 'done' or status == 'failed' or status == 'cancelled' then
          out[#out + 1] = { 'finish', epoch, lane, deadline, job }
        end
      end
    end
  end
  return out
end
