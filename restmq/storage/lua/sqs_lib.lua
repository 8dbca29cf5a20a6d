-- sqs_lib.lua: helpers of the SQS scripts (sqs_*.lua), prepended after lib.lua.
-- An SQS queue is one of RestMQ's queues: it exists once it was created through the
-- SQS API (<q>:sqs) or once RestMQ knows it (QUEUESET), so queues made by a REST
-- publish are SQS queues too.

local function sqs_exists(queue)
  return redis.call('EXISTS', queue .. ':sqs') == 1 or redis.call('SISMEMBER', 'QUEUESET', queue) == 1
end

-- The reply that SqsStore turns into QueueNotFound.
local function no_queue(queue)
  return redis.error_reply('NOQUEUE ' .. queue)
end

-- Remove up to n messages of <q> (waiting, leased, delayed) with their bookkeeping.
-- Returns removed, more (1 when messages are left).
local function sqs_purge_some(queue, n)
  local victims = {}
  local popped = redis.call('RPOP', queue .. ':queue', n)
  if popped then
    for _, key in ipairs(popped) do
      victims[#victims + 1] = key
    end
  end
  for _, zset in ipairs({queue .. ':inflight', queue .. ':delayed'}) do
    if #victims < n then
      local left = redis.call('ZPOPMIN', zset, n - #victims)
      for i = 1, #left, 2 do
        victims[#victims + 1] = left[i]
      end
    end
  end
  local mine = {}
  for _, key in ipairs(victims) do
    if owns(queue, key) then
      mine[#mine + 1] = key
    end
  end
  local removed = 0
  if #mine > 0 then
    removed = redis.call('DEL', unpack(mine))
    redis.call('HDEL', queue .. ':deliveries', unpack(mine))
    redis.call('HDEL', queue .. ':leases', unpack(mine))
    redis.call('HDEL', queue .. ':enqueued', unpack(mine))
  end
  local more = 0
  if redis.call('EXISTS', queue .. ':queue', queue .. ':inflight', queue .. ':delayed') > 0 then
    more = 1
  end
  return removed, more
end
