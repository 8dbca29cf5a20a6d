-- add.lua: store messages and queue their keys, for the default consumers and every
-- consumer group; wake streaming consumers on every process.
-- KEYS[1] = <q>:queue (the script also touches <q>:UUID, QUEUESET, queuestat::<q>,
-- <q>:listeners, <q>:bsubs, <q>:poppers, <q>:settings, <q>:delayed, <q>:idempotency,
-- <q>:idempotencyexp, <q>:enqueued, <q>:delivered, the history, <q>:groups, <q>:refs,
-- <q>:meta, <q>:okey, the lists of the groups, restmq:rpc:<id>: fewer arguments make
-- the hottest call cheaper to send)
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = ttl seconds or ""
-- ARGV[4] = delay ms or ""  ARGV[5] = idempotency key or ""  ARGV[6] = idempotency window ms
-- ARGV[7] = default history size  ARGV[8] = "" (bodies only) or "m" (each body is followed
-- by its metadata blob and its ordering key, "" when none)
-- ARGV[9] = request id of a caller waiting for a reply, or ""  ARGV[10] = its timeout ms
-- ARGV[11..] = message bodies (a batch is atomic)
-- Every group of the queue gets every message; the body is stored once with a count
-- of its holders (<q>:refs) when there are groups.
-- Publish-through: when the queue has no groups and is broadcast, started, empty,
-- streamed by broadcast subscribers and nobody pops it, the batch goes straight to the
-- broadcast channel (and the history) instead of through the list: one hop instead of
-- three. If no process receives it after all, it is stored as usual.
-- Returns {replayed (0|1), key1, key2, ...}; error "QUEUEFULL ..." when the queue refuses.
local queue = ARGV[1]
local list = KEYS[1]
local now = now_ms()
local idem = ARGV[5]
local stride = ARGV[8] == 'm' and 3 or 1
local first_body = 11
local count = (#ARGV - first_body + 1) / stride

local function body(i)
  return ARGV[first_body + (i - 1) * stride]
end
local function blob(i)
  return stride == 3 and ARGV[first_body + (i - 1) * 3 + 1] or ''
end
local function okey(i)
  return stride == 3 and ARGV[first_body + (i - 1) * 3 + 2] or ''
end

if idem ~= '' then
  local stale = redis.call('ZRANGEBYSCORE', queue .. ':idempotencyexp', '-inf', now, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', queue .. ':idempotencyexp', unpack(stale))
    redis.call('HDEL', queue .. ':idempotency', unpack(stale))
  end
  local first = redis.call('HGET', queue .. ':idempotency', idem)
  if first then
    local keys = cjson.decode(first)
    table.insert(keys, 1, 1)
    return keys
  end
end

local function done(keys)
  if redis.call('SADD', 'QUEUESET', queue) == 1 then
    redis.call('SET', 'queuestat::' .. queue, '1', 'NX')
  end
  if idem ~= '' then
    redis.call('HSET', queue .. ':idempotency', idem, cjson.encode(keys))
    redis.call('ZADD', queue .. ':idempotencyexp', now + tonumber(ARGV[6]), idem)
  end
  if ARGV[9] ~= '' then
    redis.call('SET', 'restmq:rpc:' .. ARGV[9], '', 'PX', ARGV[10])
  end
  table.insert(keys, 1, 0)
  return keys
end

local function new_keys()
  local last = redis.call('INCRBY', queue .. ':UUID', count)
  local keys = {}
  for i = 1, count do
    keys[i] = queue .. ':' .. (last - count + i)
  end
  return keys
end

local groups = redis.call('HKEYS', queue .. ':groups')
local keys
if #groups == 0 and ARGV[4] == '' and redis.call('EXISTS', queue .. ':bsubs') == 1
    and redis.call('EXISTS', queue .. ':poppers') == 0
    and redis.call('GET', queue .. ':queuepolicy') ~= '2'
    and not is_stopped(queue) and redis.call('LLEN', list) == 0 then
  keys = new_keys()
  local batch = {}
  for i = 1, count do
    batch[#batch + 1] = keys[i]
    batch[#batch + 1] = body(i)
    batch[#batch + 1] = blob(i)
  end
  if redis.call('PUBLISH', 'restmq:broadcast:' .. queue, cjson.encode(batch)) > 0 then
    record_history(queue, batch, tonumber(ARGV[7]))
    count_delivered(queue, count)
    return done(keys)
  end
end

local settings = redis.call('HMGET', queue .. ':settings', 'maxlen', 'overflow', 'ttl')
local maxlen = tonumber(settings[1])
local ttl = ARGV[3]
if ttl == '' and settings[3] then
  ttl = settings[3]
end
if maxlen and maxlen > 0 and settings[2] ~= 'drop_oldest' then
  local length = redis.call('LLEN', list) + redis.call('ZCARD', queue .. ':delayed')
  if length + count > maxlen then
    count_event('queue_full', queue, 1)
    return redis.error_reply('QUEUEFULL queue ' .. queue .. ' holds ' .. length .. ' of at most ' .. maxlen .. ' messages')
  end
end

keys = keys or new_keys()
-- bodies and their times in bulk: one command per 1000 messages, not two per message
for first = 1, count, 1000 do
  local final = math.min(first + 999, count)
  local pairs_kv, times, metas, okeys, refs = {}, {}, {}, {}, {}
  for i = first, final do
    pairs_kv[#pairs_kv + 1] = keys[i]
    pairs_kv[#pairs_kv + 1] = body(i)
    times[#times + 1] = keys[i]
    times[#times + 1] = now
    if blob(i) ~= '' then
      metas[#metas + 1] = keys[i]
      metas[#metas + 1] = blob(i)
    end
    if okey(i) ~= '' then
      okeys[#okeys + 1] = keys[i]
      okeys[#okeys + 1] = okey(i)
    end
    if #groups > 0 then
      refs[#refs + 1] = keys[i]
      refs[#refs + 1] = #groups + 1
    end
  end
  if ttl ~= '' then
    for i = first, final do
      redis.call('SET', keys[i], body(i), 'EX', ttl)
    end
  else
    redis.call('MSET', unpack(pairs_kv))
  end
  redis.call('HSET', queue .. ':enqueued', unpack(times))
  if #metas > 0 then
    redis.call('HSET', queue .. ':meta', unpack(metas))
  end
  if #okeys > 0 then
    redis.call('HSET', queue .. ':okey', unpack(okeys))
  end
  if #refs > 0 then
    redis.call('HSET', queue .. ':refs', unpack(refs))
  end
  for _, g in ipairs(groups) do
    redis.call('HSET', queue .. '#' .. g .. ':enqueued', unpack(times))
  end
end

local function enqueue(ns, target)
  if ARGV[4] ~= '' then
    local due = now + tonumber(ARGV[4])
    for i = 1, count do
      redis.call('ZADD', ns .. ':delayed', due, keys[i])
    end
  else
    for i = 1, count, 1000 do
      redis.call('LPUSH', target, unpack(keys, i, math.min(i + 999, count)))
    end
    if redis.call('EXISTS', ns .. ':listeners') == 1 then
      redis.call('PUBLISH', ARGV[2], 'w' .. ns)
    end
  end
end

enqueue(queue, list)
if maxlen and maxlen > 0 and settings[2] == 'drop_oldest' then
  local dropped = 0
  while redis.call('LLEN', list) > maxlen and dropped < 10000 do
    local oldest = redis.call('RPOP', list)
    if owns(queue, oldest) then
      finish(queue, '', oldest)
    end
    dropped = dropped + 1
  end
end
for _, g in ipairs(groups) do
  local ns = queue .. '#' .. g
  enqueue(ns, ns .. ':queue')
end
return done(keys)
