-- sqs_receive.lua: lease up to N messages for ReceiveMessage.
-- KEYS[1] = <q>:queue (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = N  ARGV[3] = visibility ms, or "" for the queue's
-- lease_seconds  ARGV[4] = visibility ms when the queue has none  ARGV[5] = lease token
-- prefix  ARGV[6] = default max_receives  ARGV[7] = listeners ttl ms (a long poll waits)
-- or 0  ARGV[8] = "1" if a stopped queue holds receives  ARGV[9] = most messages in flight
-- The lease is the visibility timeout, the delivery count ApproximateReceiveCount; an
-- expired lease makes the message visible again, or a dead letter after max_receives.
-- Returns {stopped (0|1), the queue's ReceiveMessageWaitTimeSeconds, key, body, deliveries,
-- token, sent ms, ...} | error "NOQUEUE ..." | error "OVERLIMIT ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
if ARGV[7] ~= '0' then
  listen(queue, ARGV[7])
  mark(queue .. ':poppers', ARGV[7])
end
local wait = tonumber(redis.call('HGET', queue .. ':sqs', 'ReceiveMessageWaitTimeSeconds')) or 0
if ARGV[8] == '1' and is_stopped(queue) then
  return {1, wait}
end
local now = now_ms()
promote(queue, now, tonumber(ARGV[6]))
local inflight = redis.call('ZCARD', queue .. ':inflight')
if inflight >= tonumber(ARGV[9]) then
  return redis.error_reply('OVERLIMIT ' .. inflight .. ' messages of ' .. queue .. ' are in flight')
end
local lease = tonumber(ARGV[3])
if not lease then
  local own = tonumber(redis.call('HGET', queue .. ':settings', 'lease_seconds'))
  lease = own and math.floor(own * 1000) or tonumber(ARGV[4])
end
-- a visibility timeout of 0 still counts the delivery and keeps the message
lease = math.max(lease, 1)
local want = math.min(tonumber(ARGV[2]), tonumber(ARGV[9]) - inflight)
local popped = pop(queue, want, lease, ARGV[5], now)
local out = {0, wait}
for i = 1, #popped, 4 do
  out[#out + 1] = popped[i]
  out[#out + 1] = popped[i + 1]
  out[#out + 1] = popped[i + 2]
  out[#out + 1] = popped[i + 3]
  out[#out + 1] = redis.call('HGET', queue .. ':enqueued', popped[i]) or now
end
return out
