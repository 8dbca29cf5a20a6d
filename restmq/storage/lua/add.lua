-- add.lua: store messages and queue their keys; wake streaming consumers on every process.
-- KEYS[1] = <q>:queue (the script also touches <q>:UUID, QUEUESET, queuestat::<q>,
-- <q>:listeners, <q>:settings, <q>:delayed, <q>:idempotency, <q>:idempotencyexp and
-- <q>:enqueued: fewer arguments make the hottest call cheaper to send)
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = ttl seconds or ""
-- ARGV[4] = delay ms or ""  ARGV[5] = idempotency key or ""  ARGV[6] = idempotency window ms
-- ARGV[7..] = message bodies (a batch is atomic: all or none)
-- Returns {replayed (0|1), key1, key2, ...}; error "QUEUEFULL ..." when the queue refuses.
local queue = ARGV[1]
local KEYS = {queue .. ':UUID', KEYS[1], 'QUEUESET', 'queuestat::' .. queue, queue .. ':listeners',
  queue .. ':settings', queue .. ':delayed', queue .. ':idempotency', queue .. ':idempotencyexp',
  queue .. ':enqueued'}
local now = now_ms()
local idem = ARGV[5]

if idem ~= '' then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', now, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', KEYS[9], unpack(stale))
    redis.call('HDEL', KEYS[8], unpack(stale))
  end
  local first = redis.call('HGET', KEYS[8], idem)
  if first then
    local keys = cjson.decode(first)
    table.insert(keys, 1, 1)
    return keys
  end
end

local count = #ARGV - 6
local settings = redis.call('HMGET', KEYS[6], 'maxlen', 'overflow', 'ttl')
local maxlen = tonumber(settings[1])
local ttl = ARGV[3]
if ttl == '' and settings[3] then
  ttl = settings[3]
end
if maxlen and maxlen > 0 and settings[2] ~= 'drop_oldest' then
  local length = redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[7])
  if length + count > maxlen then
    return redis.error_reply('QUEUEFULL queue ' .. queue .. ' holds ' .. length .. ' of at most ' .. maxlen .. ' messages')
  end
end

local last = redis.call('INCRBY', KEYS[1], count)
local keys = {}
for i = 1, count do
  keys[i] = queue .. ':' .. (last - count + i)
end
-- bodies and their times in bulk: one command per 1000 messages, not two per message
for first = 1, count, 1000 do
  local final = math.min(first + 999, count)
  local pairs_kv, times = {}, {}
  for i = first, final do
    pairs_kv[#pairs_kv + 1] = keys[i]
    pairs_kv[#pairs_kv + 1] = ARGV[6 + i]
    times[#times + 1] = keys[i]
    times[#times + 1] = now
  end
  if ttl ~= '' then
    for i = first, final do
      redis.call('SET', keys[i], ARGV[6 + i], 'EX', ttl)
    end
  else
    redis.call('MSET', unpack(pairs_kv))
  end
  redis.call('HSET', KEYS[10], unpack(times))
end

if ARGV[4] ~= '' then
  local due = now + tonumber(ARGV[4])
  for i = 1, count do
    redis.call('ZADD', KEYS[7], due, keys[i])
  end
else
  for i = 1, count, 1000 do
    redis.call('LPUSH', KEYS[2], unpack(keys, i, math.min(i + 999, count)))
  end
  if maxlen and maxlen > 0 and settings[2] == 'drop_oldest' then
    while redis.call('LLEN', KEYS[2]) > maxlen do
      local oldest = redis.call('RPOP', KEYS[2])
      redis.call('DEL', oldest)
      redis.call('HDEL', KEYS[10], oldest)
    end
  end
end

if redis.call('SADD', KEYS[3], queue) == 1 then
  redis.call('SET', KEYS[4], '1', 'NX')
end
if idem ~= '' then
  redis.call('HSET', KEYS[8], idem, cjson.encode(keys))
  redis.call('ZADD', KEYS[9], now + tonumber(ARGV[6]), idem)
end
if ARGV[4] == '' and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('PUBLISH', ARGV[2], 'w' .. queue)
end
table.insert(keys, 1, 0)
return keys
