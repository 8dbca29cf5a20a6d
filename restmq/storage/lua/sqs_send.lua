-- sqs_send.lua: store the messages of a SendMessage / SendMessageBatch.
-- KEYS[1] = <q>:queue (the script also touches <q>:UUID, <q>:sqs, <q>:settings,
-- <q>:delayed, <q>:enqueued, <q>:listeners, QUEUESET, queuestat::<q>)
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = largest body when the queue
-- has no MaximumMessageSize  then (body, delay seconds or "" for the queue's DelaySeconds)
-- per entry. Each entry is stored, or refused alone when its body is over the queue's
-- MaximumMessageSize ("!size"); the queue's maxlen setting refuses the whole batch.
-- Returns {now ms, key or "!size", ...} | error "NOQUEUE ..." | error "QUEUEFULL ...".
local queue = ARGV[1]
local list = KEYS[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
local now = now_ms()
local attrs = redis.call('HMGET', queue .. ':sqs', 'DelaySeconds', 'MaximumMessageSize')
local default_delay = tonumber(attrs[1]) or 0
local max_size = tonumber(attrs[2]) or tonumber(ARGV[3])
local settings = redis.call('HMGET', queue .. ':settings', 'maxlen', 'overflow', 'ttl')
local maxlen = tonumber(settings[1])
local ttl = settings[3]
local count = (#ARGV - 3) / 2
if maxlen and maxlen > 0 and settings[2] ~= 'drop_oldest' then
  local length = redis.call('LLEN', list) + redis.call('ZCARD', queue .. ':delayed')
  if length + count > maxlen then
    return redis.error_reply('QUEUEFULL queue ' .. queue .. ' holds ' .. length .. ' of at most ' .. maxlen .. ' messages')
  end
end
local out = {now}
local pushed = 0
for i = 4, #ARGV, 2 do
  local body = ARGV[i]
  if #body > max_size then
    out[#out + 1] = '!size'
  else
    local key = queue .. ':' .. redis.call('INCR', queue .. ':UUID')
    if ttl then
      redis.call('SET', key, body, 'EX', ttl)
    else
      redis.call('SET', key, body)
    end
    redis.call('HSET', queue .. ':enqueued', key, now)
    local delay = tonumber(ARGV[i + 1]) or default_delay
    if delay > 0 then
      redis.call('ZADD', queue .. ':delayed', now + delay * 1000, key)
    else
      redis.call('LPUSH', list, key)
      pushed = pushed + 1
    end
    out[#out + 1] = key
  end
end
if maxlen and maxlen > 0 and settings[2] == 'drop_oldest' then
  while redis.call('LLEN', list) > maxlen do
    local oldest = redis.call('RPOP', list)
    redis.call('DEL', oldest)
    redis.call('HDEL', queue .. ':enqueued', oldest)
  end
end
if redis.call('SADD', 'QUEUESET', queue) == 1 then
  redis.call('SET', 'queuestat::' .. queue, '1', 'NX')
end
if pushed > 0 and redis.call('EXISTS', queue .. ':listeners') == 1 then
  redis.call('PUBLISH', ARGV[2], 'w' .. queue)
end
return out
