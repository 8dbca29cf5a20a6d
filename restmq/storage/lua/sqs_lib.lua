-- sqs_lib.lua: helpers of the SQS scripts (sqs_*.lua), prepended after lib.lua.
-- An SQS queue is one of RestMQ's queues: it exists once it was created through the
-- SQS API (<q>:sqs) or once RestMQ knows it (QUEUESET), so queues made by a REST
-- publish are SQS queues too. SQS consumers are the queue's default consumers
-- (group ""); consumer groups made over REST get every SQS message as well.

local function sqs_exists(queue)
  return redis.call('EXISTS', queue .. ':sqs') == 1 or redis.call('SISMEMBER', 'QUEUESET', queue) == 1
end

-- The reply that SqsStore turns into QueueNotFound.
local function no_queue(queue)
  return redis.error_reply('NOQUEUE ' .. queue)
end

-- Store one message of <q> for its default consumers and every group, as add.lua
-- does: body (with its ttl), time, metadata blob, ordering key, holders. Delayed
-- for delay_ms when > 0. Returns its key and whether it was queued at once.
local function sqs_store(queue, groups, body, blob, okey, delay_ms, ttl, now)
  local key = queue .. ':' .. redis.call('INCR', queue .. ':UUID')
  store_bodies(queue, groups, ttl, now, 1, 1, function()
    return key, body, blob, okey
  end)
  local namespaces = {queue}
  for _, g in ipairs(groups) do
    namespaces[#namespaces + 1] = queue .. '#' .. g
  end
  for _, ns in ipairs(namespaces) do
    if delay_ms > 0 then
      redis.call('ZADD', ns .. ':delayed', now + delay_ms, key)
    else
      redis.call('LPUSH', ns .. ':queue', key)
    end
  end
  return key, delay_ms <= 0
end

-- Remove up to n messages of <q>'s default consumers (waiting, leased, delayed, and
-- those waiting behind a held ordering key) as an ack would: a body goes once no
-- consumer group holds it; once none are left, the queue's bookkeeping of them goes
-- too. Returns removed, more (1 when messages are left).
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
  if #victims < n then
    -- messages parked behind a held ordering key whose holder is gone: a few hundred
    -- keys a call (each visited is drained or gives its quota), not HKEYS of them all
    local page = redis.call('HSCAN', queue .. ':okeys', 0, 'COUNT', 200)[2]
    for i = 1, #page, 2 do
      local k = page[i]
      if #victims >= n then
        break
      end
      local parked = redis.call('RPOP', okwait(queue, '', k), n - #victims)
      if parked then
        for _, key in ipairs(parked) do
          victims[#victims + 1] = key
          redis.call('DECR', queue .. ':parked')
        end
      end
      if redis.call('EXISTS', okwait(queue, '', k)) == 0 then
        redis.call('HDEL', queue .. ':okeys', k)
      end
    end
  end
  local removed = 0
  for _, key in ipairs(victims) do
    if owns(queue, key) then
      redis.call('HDEL', queue .. ':leases', key)
      finish(queue, '', key)
      removed = removed + 1
    end
  end
  if redis.call('EXISTS', queue .. ':queue', queue .. ':inflight', queue .. ':delayed',
      queue .. ':okeys') > 0 then
    return removed, 1
  end
  redis.call('DEL', queue .. ':deliveries', queue .. ':leases', queue .. ':enqueued',
    queue .. ':history', queue .. ':historybodies', queue .. ':historymeta', queue .. ':okeys',
    queue .. ':parked', queue .. ':sqsattempts', queue .. ':sqsattemptsexp')
  return removed, 0
end
