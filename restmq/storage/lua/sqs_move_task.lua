-- sqs_move_task.lua: start, cancel or read the message move task of a dead-letter queue.
-- KEYS[1] = <dlq>:sqsmove (the script also reads <dlq>:sqs, QUEUESET, <dlq>:queue)
-- ARGV[1] = dead-letter queue name  ARGV[2] = "start" | "cancel" | "read"
-- start: ARGV[3] = new handle  ARGV[4] = destination ("" = the sources)
--        ARGV[5] = messages per second ("" = as fast as it goes)  ARGV[6] = now ms
--        ARGV[7] = ms after which a running task's process is presumed gone
-- cancel: ARGV[3] = handle
-- Returns the task's fields after the change (HGETALL; empty when there is none)
-- (cancel of a handle that is not the running task: {}) | error "NOQUEUE ..."
-- | error "NOTDLQ ..." (no queue sends its dead letters there) | error "MOVERUNNING ...".
local dlq = ARGV[1]
if not sqs_exists(dlq) then
  return no_queue(dlq)
end
local status = redis.call('HGET', KEYS[1], 'status')
if ARGV[2] == 'start' then
  if redis.call('SCARD', dlq .. ':sqssources') == 0 and not string.match(dlq, ':dead$') then
    return redis.error_reply('NOTDLQ ' .. dlq)
  end
  local updated = tonumber(redis.call('HGET', KEYS[1], 'updated')) or 0
  if (status == 'RUNNING' or status == 'CANCELLING') and updated + tonumber(ARGV[7]) > tonumber(ARGV[6]) then
    return redis.error_reply('MOVERUNNING ' .. dlq)
  end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'handle', ARGV[3], 'status', 'RUNNING', 'destination', ARGV[4],
    'rate', ARGV[5], 'moved', 0, 'to_move', redis.call('LLEN', dlq .. ':queue'),
    'started', ARGV[6], 'updated', ARGV[6])
elseif ARGV[2] == 'cancel' then
  if redis.call('HGET', KEYS[1], 'handle') ~= ARGV[3] or status ~= 'RUNNING' then
    return {}
  end
  redis.call('HSET', KEYS[1], 'status', 'CANCELLING')
end
return redis.call('HGETALL', KEYS[1])
