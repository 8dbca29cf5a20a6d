-- sqs_move.lua: one step of a message move task (StartMessageMoveTask): dead letters of
-- <dlq> back to the queues they came from, or to one destination.
-- KEYS[1] = <dlq>:queue (the script also touches <dlq>:sqsmove, the bookkeeping of <dlq>,
-- and the keys of each destination queue named in keys.py)
-- ARGV[1] = dead-letter queue name  ARGV[2] = task handle  ARGV[3] = destination queue
-- ("" = each message's own source)  ARGV[4] = most messages moved by this call
-- ARGV[5] = notify channel
-- The oldest dead letters move first; each gets a fresh key and delivery count in its
-- destination and keeps its metadata (attributes, FIFO group). A message whose
-- destination no longer exists stays, and the task fails with the reason.
-- Returns {moved by this call, the task's status after it} (status "" when the handle
-- is not the queue's current task).
local dlq = ARGV[1]
local task = dlq .. ':sqsmove'
local current = redis.call('HMGET', task, 'handle', 'status')
if current[1] ~= ARGV[2] then
  return {0, ''}
end
if current[2] ~= 'RUNNING' then
  if current[2] == 'CANCELLING' then
    redis.call('HSET', task, 'status', 'CANCELLED')
    return {0, 'CANCELLED'}
  end
  return {0, current[2]}
end
local now = now_ms()
local moved = 0
local woken = {}
local status = 'RUNNING'
while moved < tonumber(ARGV[4]) do
  local key = redis.call('RPOP', KEYS[1])
  if not key then
    break
  end
  if owns(dlq, key) then
    local body = redis.call('GET', key)
    local target = ARGV[3]
    if target == '' then
      local info = redis.call('HGET', dlq .. ':deadinfo', key)
      local from = info and cjson.decode(info).from
      target = type(from) == 'string' and string.match(from, '^(.+):%d+$') or ''
    end
    if target == '' or not sqs_exists(target) then
      redis.call('RPUSH', KEYS[1], key)
      status = 'FAILED'
      redis.call('HSET', task, 'failure', target == '' and 'a dead letter of unknown origin'
        or ('the destination ' .. target .. ' does not exist'))
      break
    end
    local meta = redis.call('HGET', dlq .. ':meta', key) or ''
    local okey = redis.call('HGET', dlq .. ':okey', key) or ''
    redis.call('HDEL', dlq .. ':deadinfo', key)
    finish(dlq, '', key)
    if body then
      local ttl = redis.call('HGET', target .. ':settings', 'ttl')
      sqs_store(target, redis.call('HKEYS', target .. ':groups'), body, meta, okey, 0, ttl, now)
      woken[target] = true
      moved = moved + 1
    end
  end
end
for target in pairs(woken) do
  if redis.call('SADD', 'QUEUESET', target) == 1 then
    redis.call('SET', 'queuestat::' .. target, '1', 'NX')
  end
  if redis.call('EXISTS', target .. ':listeners') == 1 then
    redis.call('PUBLISH', ARGV[5], 'w' .. target)
  end
end
redis.call('HINCRBY', task, 'moved', moved)
redis.call('HSET', task, 'updated', now)
if status == 'RUNNING' and redis.call('LLEN', KEYS[1]) == 0 then
  status = 'COMPLETED'
end
redis.call('HSET', task, 'status', status)
return {moved, status}
