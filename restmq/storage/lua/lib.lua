-- lib.lua: helpers prepended to every script by scripts.py (Lua has no import in Redis).
-- Keys of a queue are derived from its name here only where a script must touch
-- keys it cannot know in advance (message bodies, the dead-letter queue); the
-- names follow restmq/keys.py.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A list element is served only if it is a message key of this queue ("<q>:<n>"):
-- anything else pushed by a foreign client is dropped, never dereferenced.
local function owns(queue, key)
  local n = #queue
  return string.sub(key, 1, n + 1) == queue .. ':' and string.find(key, '^%d+$', n + 2) ~= nil
end

local function del_many(keys)
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
end

-- Move a message body to "<q>:dead" (or the queue its dead_letter_queue setting
-- names), an ordinary queue, keeping its delivery count and recording why. The
-- original key and its bookkeeping are removed.
local function dead_letter(queue, key, count, reason, now)
  local body = redis.call('GET', key)
  redis.call('DEL', key)
  redis.call('HDEL', queue .. ':deliveries', key)
  redis.call('HDEL', queue .. ':enqueued', key)
  if not body then
    return nil
  end
  local dq = redis.call('HGET', queue .. ':settings', 'dead_letter_queue') or (queue .. ':dead')
  local newkey = dq .. ':' .. redis.call('INCR', dq .. ':UUID')
  redis.call('SET', newkey, body)
  redis.call('LPUSH', dq .. ':queue', newkey)
  redis.call('SADD', 'QUEUESET', dq)
  redis.call('HSET', dq .. ':deliveries', newkey, count)
  redis.call('HSET', dq .. ':enqueued', newkey, now)
  redis.call('HSET', dq .. ':deadinfo', newkey,
    cjson.encode({reason = reason, from = key, deliveries = tonumber(count), at = now}))
  return newkey
end

-- Housekeeping every take runs first: due delayed messages join the back of the
-- queue, expired leases go back to its head (or to the dead letters once they
-- were delivered max_receives times). Bounded per call.
local function promote(queue, now, default_max_receives)
  local list = queue .. ':queue'
  local due = redis.call('ZRANGEBYSCORE', queue .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', queue .. ':delayed', unpack(due))
    redis.call('LPUSH', list, unpack(due))
  end
  local inflight = queue .. ':inflight'
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    local max = tonumber(redis.call('HGET', queue .. ':settings', 'max_receives')) or default_max_receives
    redis.call('ZREM', inflight, unpack(expired))
    redis.call('HDEL', queue .. ':leases', unpack(expired))
    -- earliest deadline ends up at the very head (consumers RPOP)
    for i = #expired, 1, -1 do
      local key = expired[i]
      local count = tonumber(redis.call('HGET', queue .. ':deliveries', key)) or 0
      if count >= max then
        dead_letter(queue, key, count, 'max_receives', now)
      else
        redis.call('RPUSH', list, key)
      end
    end
  end
  return #due + #expired
end

-- The plain pop, in bulk: a few commands per batch rather than six per message.
local function pop_plain(queue, n)
  local list = queue .. ':queue'
  local out = {}
  local got = 0
  while got < n do
    local want = n - got
    local keys = redis.call('RPOP', list, want)
    if not keys then
      break
    end
    local mine = {}
    for _, key in ipairs(keys) do
      if owns(queue, key) then
        mine[#mine + 1] = key
      end
    end
    if #mine > 0 then
      local bodies = redis.call('MGET', unpack(mine))
      local counts = redis.call('HMGET', queue .. ':deliveries', unpack(mine))
      redis.call('DEL', unpack(mine))
      redis.call('HDEL', queue .. ':deliveries', unpack(mine))
      redis.call('HDEL', queue .. ':enqueued', unpack(mine))
      for i, key in ipairs(mine) do
        if bodies[i] then
          got = got + 1
          out[#out + 1] = key
          out[#out + 1] = bodies[i]
          out[#out + 1] = tonumber(counts[i]) or 0
          out[#out + 1] = ''
        end
      end
    end
    if #keys < want then
      break
    end
  end
  return out
end

-- Pop up to n live messages: expired (ttl) bodies and foreign elements are skipped.
-- With lease_ms > 0 each message is leased (kept, counted, hidden until the deadline)
-- and its token is tokens_prefix .. i; otherwise it is deleted.
-- Returns a flat list: key, body, deliveries, token (token "" when not leased).
local function pop(queue, n, lease_ms, tokens_prefix, now)
  if lease_ms == 0 then
    return pop_plain(queue, n)
  end
  local list = queue .. ':queue'
  local out = {}
  local got = 0
  while got < n do
    local key = redis.call('RPOP', list)
    if not key then
      break
    end
    if owns(queue, key) then
      local body = redis.call('GET', key)
      if body then
        got = got + 1
        if lease_ms > 0 then
          local count = redis.call('HINCRBY', queue .. ':deliveries', key, 1)
          local token = tokens_prefix .. got
          redis.call('ZADD', queue .. ':inflight', now + lease_ms, key)
          redis.call('HSET', queue .. ':leases', key, token)
          out[#out + 1] = key
          out[#out + 1] = body
          out[#out + 1] = count
          out[#out + 1] = token
        else
          local count = redis.call('HGET', queue .. ':deliveries', key) or 0
          redis.call('DEL', key)
          redis.call('HDEL', queue .. ':deliveries', key)
          redis.call('HDEL', queue .. ':enqueued', key)
          out[#out + 1] = key
          out[#out + 1] = body
          out[#out + 1] = count
          out[#out + 1] = ''
        end
      else
        redis.call('HDEL', queue .. ':deliveries', key)
        redis.call('HDEL', queue .. ':enqueued', key)
      end
    end
  end
  return out
end

local function is_stopped(queue)
  return redis.call('GET', 'queuestat::' .. queue) == '0'
end

-- Set a marker key for ttl ms; never shortens what another process asked for
-- (processes may run with different sweep intervals).
local function mark(key, ttl)
  if redis.call('PTTL', key) < tonumber(ttl) then
    redis.call('SET', key, '1', 'PX', ttl)
  end
end

-- <q> is streamed by some process (publishers must notify)
local function listen(queue, ttl)
  mark(queue .. ':listeners', ttl)
end

-- Append a broadcast batch (key, body, key, body ...) to the bounded history of <q>.
local function record_history(queue, batch, default_size)
  local size = tonumber(redis.call('HGET', queue .. ':settings', 'history_size')) or default_size
  if size <= 0 then
    return
  end
  local history = queue .. ':history'
  for i = 1, #batch, 2 do
    redis.call('LPUSH', history, batch[i])
    redis.call('HSET', queue .. ':historybodies', batch[i], batch[i + 1])
  end
  local extra = redis.call('LLEN', history) - size
  if extra > 0 then
    local old = redis.call('RPOP', history, extra)
    redis.call('HDEL', queue .. ':historybodies', unpack(old))
  end
end
