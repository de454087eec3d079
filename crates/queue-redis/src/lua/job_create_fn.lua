-- write_job(jk, ...): writes the hash `jk` of a new job record. Numbers go in as text (`seq`
-- too): Redis would format a Lua number with a float format, at a cost. One HSET with the fields
-- as arguments; only the optional ones (lane, request_id) go through a table, made only for a
-- job that has them: building and unpacking a table of all the fields cost a submit more than a
-- tenth of its Lua. Shared by `add_job` below and the batched `submit_plain.lua`; `hand_new`
-- (handoff_new_fn.lua) and `hand_new_chat` (handoff_chat_fn.lua) pass `epoch` (text) through
-- `create_job` or `add_job`: the record as a start of the new job under
-- that epoch leaves it, `processing`, attempt 1 (epoch 1 for a non-chat job's first claim, the
-- lane claim's epoch for a chat job).
local NO_FIELDS = {}
local function write_job(jk, id, kind, tenant, lane, request_id, now, payload, seq, epoch)
  local status, attempt = 'queued', '0'
  if epoch then
    status, attempt = 'processing', '1'
  else
    epoch = '0'
  end
  local optional = NO_FIELDS
  if lane ~= '' or request_id ~= '' then
    optional = {}
    if lane ~= '' then
      optional[1], optional[2] = 'lane', lane
    end
    if request_id ~= '' then
      optional[#optional + 1] = 'request_id'
      optional[#optional + 1] = request_id
    end
  end
  redis.call('HSET', jk, 'id', id, 'tenant', tenant, 'kind', kind, 'status', status, 'attempt', attempt,
    'epoch', epoch, 'seq', seq, 'created', now, 'updated', now, 'payload', payload, unpack(optional))
end

-- create_job(K, A, epoch) (job_create.lua, submit_one.lua, submit_chat.lua between its lane checks
-- and its append, and `hand_new`, handoff_new_fn.lua): creates one job record: refuses an
-- existing id, then `add_job`. No counter: a kind's queued count is derived (its pending index
-- less its `processing` counter).
-- K[1] job hash, K[2] seq counter, K[3] pending zset of the job's kind
-- A[1] id, A[2] kind, A[3] tenant, A[4] lane ('' = none), A[5] request id ('' = none),
--   A[6] now (ms), A[7] payload (JSON text)
-- epoch: nil for a queued job, or the epoch (text) of a job created already started (write_job).
-- Returns the new seq (>= 1) and its text, or 0 when the id is taken (nothing written).
-- add_job(K, A, epoch): what `create_job` writes once the id is known to be free: assigns the next
-- sequence number, writes the record and indexes the job as pending; returns the seq and its
-- text. `hand_new_chat` (handoff_chat_fn.lua) checks the id itself, before it claims the lane
-- whose epoch the record is written under.
local function add_job(K, A, epoch)
  local seq = redis.call('INCR', K[2])
  local text = string.format('%d', seq)
  write_job(K[1], A[1], A[2], A[3], A[4], A[5], A[6], A[7], text, epoch)
  redis.call('ZADD', K[3], text, A[1])
  return seq, text
end

local function create_job(K, A, epoch)
  if redis.call('EXISTS', K[1]) == 1 then
    return 0
  end
  return add_job(K, A, epoch)
end
