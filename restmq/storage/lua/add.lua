-- add.lua: store messages and queue their keys, for the default consumers and every
-- consumer group; hand them to the publisher's waiting consumers; wake the others.
-- KEYS[1] = <q>:queue (the script also touches <q>:UUID, QUEUESET, queuestat::<q>,
-- <q>:listeners, <q>:bsubs, <q>:poppers, <q>:settings, <q>:delayed, <q>:idempotency,
-- <q>:idempotencyexp, <q>:enqueued, <q>:delivered, the history, <q>:groups, <q>:refs,
-- <q>:meta, <q>:okey, the lists of the groups and what pop() touches, restmq:rpc:<id>:
-- fewer arguments make the hottest call cheaper to send)
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = ttl seconds or ""
-- ARGV[4] = delay ms or ""  ARGV[5] = idempotency key or ""  ARGV[6] = idempotency window ms
-- ARGV[7] = default history size  ARGV[8] = "" (bodies only) or "m" (each body is followed
-- by its metadata blob and its ordering key, "" when none)
-- ARGV[9] = request id of a caller waiting for a reply, or ""  ARGV[10] = its timeout ms
-- ARGV[11] = the publishing process's id or "": its wake-ups read "w<ns> <id>", so that
-- it skips them (it wakes its own consumers of the namespaces this returns)
-- ARGV[12] = default max_receives  ARGV[13] = lease token prefix
-- ARGV[14] = T, the number of takers (consumers waiting on the publishing process), then
-- 5 arguments per taker: group ("" default consumers), count, lease ms (0: a plain pop),
-- keep ms (a plain pop leaves the body at its key this long, as take.lua's ARGV[10]), flags: "d" the queue's (group's) own lease_seconds wins, "h" a stopped queue hands
-- nothing, "s" round-robin streams (taken only while the policy is roundrobin; a
-- group's members always compete)
-- ARGV[15 + 5T ..] = message bodies (a batch is atomic)
-- Every group of the queue gets every message; the body is stored once with a count
-- of its holders (<q>:refs) when there are groups.
-- Hand-off: once stored, each taker in turn pops (or leases) the oldest messages of its
-- namespace, as take.lua / dispatch.lua would, in this same call: a waiting consumer of
-- the publisher's process gets the message one round trip after the publish began.
-- Pass-through: when the queue has no groups and nothing waits in it, what takers pop
-- without a lease is handed to them without being stored first. A namespace with
-- messages left (and listeners) is woken on the notify channel.
-- Publish-through: when the queue has no groups and is broadcast, started, empty,
-- streamed by broadcast subscribers and nobody pops it, the batch goes straight to the
-- broadcast channel (and the history) instead of through the list: one hop instead of
-- three. If no process receives it after all, it is stored as usual.
-- Returns {0, -N, n, W, namespace1 .. namespaceW (woken), then per taker: F, F fields
-- (key, body, deliveries, token, metadata per message), or -K: it took the next K of the
-- new messages as they were sent (passed through)}, the new keys being "<q>:n" ..
-- "<q>:<n+N-1>"; a replay returns {1, N, key1 .. keyN}; error "QUEUEFULL ..." when the
-- queue refuses.
local queue = ARGV[1]
local list = KEYS[1]
local now = now_ms()
local idem = ARGV[5]
local stride = ARGV[8] == 'm' and 3 or 1
local origin = ARGV[11]
local takers = tonumber(ARGV[14])
local first_body = 15 + 5 * takers
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
  sweep_idempotency(queue, now)
  local first = redis.call('HGET', queue .. ':idempotency', idem)
  if first then
    local keys = cjson.decode(first)
    table.insert(keys, 1, #keys)
    table.insert(keys, 1, 1)
    return keys
  end
end

local first_id  -- the number of the first new message (the others follow it)

local function new_keys()
  if not first_id then
    first_id = redis.call('INCRBY', queue .. ':UUID', count) - count + 1
  end
  local keys = {}
  for i = 1, count do
    keys[i] = queue .. ':' .. (first_id + i - 1)
  end
  return keys
end

local function done(keys, woken, handed)
  if redis.call('SADD', 'QUEUESET', queue) == 1 then
    redis.call('SET', 'queuestat::' .. queue, '1', 'NX')
  end
  if idem ~= '' then
    redis.call('HSET', queue .. ':idempotency', idem, cjson.encode(keys or new_keys()))
    redis.call('ZADD', queue .. ':idempotencyexp', now + tonumber(ARGV[6]), idem)
  end
  if ARGV[9] ~= '' then
    redis.call('SET', 'restmq:rpc:' .. ARGV[9], '', 'PX', ARGV[10])
  end
  -- the keys as the first number and a negative count: they follow each other
  local out = {0, -count, first_id, #woken}
  local n = 4
  for _, ns in ipairs(woken) do
    n = n + 1
    out[n] = ns
  end
  for _, fields in ipairs(handed) do
    if type(fields) == 'number' then
      n = n + 1
      out[n] = fields  -- passed through: -k, the next k new messages
    else
      n = n + 1
      out[n] = #fields
      for _, field in ipairs(fields) do
        n = n + 1
        out[n] = field
      end
    end
  end
  return out
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
    return done(keys, {}, {})
  end
end

-- the takers' flags and whether each may take now (the policy and the queue's state)
local taker_ok = {}
local is_group = {}
for _, g in ipairs(groups) do
  is_group[g] = true
end
if ARGV[4] == '' and takers > 0 then
  local policy, stopped
  for t = 1, takers do
    local at = 15 + 5 * (t - 1)
    local g, flags = ARGV[at], ARGV[at + 4]
    local stream = string.find(flags, 's', 1, true) ~= nil
    local ok = g == '' or is_group[g] == true
    if ok and stream and g == '' then
      policy = policy or redis.call('GET', queue .. ':queuepolicy') or ''
      ok = policy == '2'
    end
    if ok and (stream or string.find(flags, 'h', 1, true)) then
      if stopped == nil then
        stopped = is_stopped(queue)
      end
      ok = not stopped
    end
    taker_ok[t] = ok
  end
end

-- Pass-through: with no groups, an empty queue (once due and expired messages are back)
-- and takers that pop without a lease, the new messages go straight to them, oldest
-- first, and are never stored (a store and a pop in one atomic call leave nothing
-- behind either). Only what they do not take is stored below.
local handed = {}
local passed = 0
local promoted = {}
if takers > 0 and #groups == 0 and ARGV[4] == '' then
  local plain = false
  for t = 1, takers do
    plain = plain or (taker_ok[t] and ARGV[15 + 5 * (t - 1)] == '' and ARGV[15 + 5 * (t - 1) + 2] == '0')
  end
  if plain then
    promote(queue, '', now, tonumber(ARGV[12]))
    promoted[''] = true
    if redis.call('LLEN', list) == 0 then
      first_id = redis.call('INCRBY', queue .. ':UUID', count) - count + 1
      for t = 1, takers do
        local at = 15 + 5 * (t - 1)
        if taker_ok[t] and ARGV[at] == '' and ARGV[at + 2] == '0' and passed < count then
          -- the caller has the bodies: it is told how many of the new messages are this taker's
          local took = math.min(count - passed, tonumber(ARGV[at + 1]))
          local keep = tonumber(ARGV[at + 3])
          if keep > 0 then
            -- a REST pop leaves the body at its key for a while (take.lua's keep_ms)
            for i = passed + 1, passed + took do
              redis.call('SET', queue .. ':' .. (first_id + i - 1), body(i), 'PX', keep)
            end
          end
          passed = passed + took
          handed[t] = -took
        end
      end
    end
  end
end
count_delivered(queue, passed)
local first_stored = passed + 1
local stored = count - passed

local settings = redis.call('HMGET', queue .. ':settings', 'maxlen', 'overflow', 'ttl')
local maxlen = tonumber(settings[1])
local ttl = ARGV[3]
if ttl == '' and settings[3] then
  ttl = settings[3]
end
local full = refuse_full(queue, list, maxlen, settings[2], stored)
if full then
  return full
end

if stored > 0 then
  keys = keys or new_keys()
end
store_bodies(queue, groups, ttl, now, first_stored, count, function(i)
  return keys[i], body(i), blob(i), okey(i)
end)

local function enqueue(ns, target)
  if ARGV[4] ~= '' then
    local due = now + tonumber(ARGV[4])
    for i = 1, count do
      redis.call('ZADD', ns .. ':delayed', due, keys[i])
    end
  else
    for i = first_stored, count, 1000 do
      redis.call('LPUSH', target, unpack(keys, i, math.min(i + 999, count)))
    end
  end
end

enqueue(queue, list)
drop_oldest(queue, list, maxlen, settings[2], stored)
for _, g in ipairs(groups) do
  local ns = queue .. '#' .. g
  enqueue(ns, ns .. ':queue')
end

-- the hand-off from the lists, for the takers pass-through did not serve (delayed
-- messages are not due yet: nobody takes them now)
if ARGV[4] == '' and takers > 0 then
  for t = 1, takers do
    if handed[t] == nil then
      local at = 15 + 5 * (t - 1)
      local g, n, lease, flags = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[at + 4]
      local out = {}
      if taker_ok[t] then
        if not promoted[g] then
          promote(queue, g, now, tonumber(ARGV[12]))
          promoted[g] = true
        end
        if lease > 0 and string.find(flags, 'd', 1, true) then
          local own = tonumber(setting(queue, g, 'lease_seconds'))
          if own then
            lease = math.floor(own * 1000)
          end
        end
        out = pop(queue, g, n, lease, ARGV[13] .. t .. '.', now, tonumber(ARGV[at + 3]))
      end
      handed[t] = out
    end
  end
end

-- wake whoever else may take what is left
local woken = {}
if ARGV[4] == '' then
  local tag = origin ~= '' and (' ' .. origin) or ''
  local spaces = {queue}
  for _, g in ipairs(groups) do
    spaces[#spaces + 1] = queue .. '#' .. g
  end
  for _, ns in ipairs(spaces) do
    if redis.call('EXISTS', ns .. ':listeners') == 1 and redis.call('LLEN', ns .. ':queue') > 0 then
      redis.call('PUBLISH', ARGV[2], 'w' .. ns .. tag)
      woken[#woken + 1] = ns
    end
  end
end
return done(keys, woken, handed)
