-- sqs_receive.lua: lease up to N messages for ReceiveMessage (the queue's default consumers).
-- KEYS[1] = <q>:queue (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = N  ARGV[3] = visibility ms, or "" for the queue's
-- lease_seconds  ARGV[4] = visibility ms when the queue has none  ARGV[5] = lease token
-- prefix  ARGV[6] = default max_receives  ARGV[7] = listeners ttl ms (a long poll waits)
-- or 0  ARGV[8] = "1" if a stopped queue holds receives  ARGV[9] = most messages in flight
-- ARGV[10] = receive request attempt id ("" none; FIFO retries)  ARGV[11] = its window ms
-- The lease is the visibility timeout, the delivery count ApproximateReceiveCount; an
-- expired lease makes the message visible again, or a dead letter after max_receives.
-- Messages with an ordering key (FIFO MessageGroupId) come in order, one in flight per key.
-- A retry with the same attempt id, while those leases last, gets the same messages.
-- Returns {stopped (0|1), the queue's ReceiveMessageWaitTimeSeconds, then per message:
-- key, body, deliveries, token, sent ms, metadata blob, first receive ms, and (in a
-- dead-letter queue) the key the message had in the queue it died in, or ""}
-- | error "NOQUEUE ..." | error "OVERLIMIT ...".
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
local out = {0, wait}
local attempts = queue .. ':sqsattempts'
local dead = redis.call('EXISTS', queue .. ':deadinfo') == 1
local function origin(key)
  local info = dead and redis.call('HGET', queue .. ':deadinfo', key)
  local from = info and cjson.decode(info).from
  return type(from) == 'string' and from or ''
end
local function answer(popped)
  for i = 1, #popped, 5 do
    local key = popped[i]
    redis.call('HSETNX', queue .. ':sqsfirst', key, now)
    out[#out + 1] = key
    out[#out + 1] = popped[i + 1]
    out[#out + 1] = popped[i + 2]
    out[#out + 1] = popped[i + 3]
    out[#out + 1] = redis.call('HGET', queue .. ':enqueued', key) or now
    out[#out + 1] = popped[i + 4]
    out[#out + 1] = redis.call('HGET', queue .. ':sqsfirst', key)
    out[#out + 1] = origin(key)
  end
  return out
end
if ARGV[10] ~= '' then
  local earlier = redis.call('HGET', attempts, ARGV[10])
  if earlier then
    local held = cjson.decode(earlier)
    local again = {}
    local with_meta = redis.call('EXISTS', queue .. ':meta') == 1
    for i = 1, #held, 2 do
      local key, token = held[i], held[i + 1]
      if redis.call('HGET', queue .. ':leases', key) == token and
          (tonumber(redis.call('ZSCORE', queue .. ':inflight', key)) or 0) > now then
        local body = redis.call('GET', key)
        if body then
          again[#again + 1] = key
          again[#again + 1] = body
          again[#again + 1] = tonumber(redis.call('HGET', queue .. ':deliveries', key)) or 1
          again[#again + 1] = token
          again[#again + 1] = with_meta and redis.call('HGET', queue .. ':meta', key) or ''
        end
      end
    end
    if #again > 0 then
      return answer(again)
    end
  end
end
promote(queue, '', now, tonumber(ARGV[6]))
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
local popped = pop(queue, '', want, lease, ARGV[5], now)
if ARGV[10] ~= '' and #popped > 0 then
  local held = {}
  for i = 1, #popped, 5 do
    held[#held + 1] = popped[i]
    held[#held + 1] = popped[i + 3]
  end
  redis.call('HSET', attempts, ARGV[10], cjson.encode(held))
  redis.call('ZADD', attempts .. 'exp', now + tonumber(ARGV[11]), ARGV[10])
  local stale = redis.call('ZRANGEBYSCORE', attempts .. 'exp', '-inf', now, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', attempts .. 'exp', unpack(stale))
    redis.call('HDEL', attempts, unpack(stale))
  end
end
return answer(popped)
