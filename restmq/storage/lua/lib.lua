-- lib.lua: helpers prepended to every script by scripts.py (Lua has no import in Redis).
-- Keys of a queue are derived from its name here only where a script must touch
-- keys it cannot know in advance (message bodies, the dead-letter queue, groups);
-- the names follow restmq/keys.py. A consuming helper takes the queue q (owner of
-- the bodies "<q>:<n>") and a group g ("" = the default consumers): its bookkeeping
-- lives under ns = ns_of(q, g).

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

-- The original's look counters ("<key>:refcount", JSON protocol get) of some message keys.
local function refcounts(keys)
  local out = {}
  for i, key in ipairs(keys) do
    out[i] = key .. ':refcount'
  end
  return out
end

-- Deployment-wide event counts read by /metrics (keys.py COUNTERS): HASH field
-- "<event>:<queue>" -> count, event one of dead_lettered, expired, queue_full.
-- Counted per queue (a group's events count under its queue).
local function count_event(event, queue, n)
  if n > 0 then
    redis.call('HINCRBY', 'restmq:counters', event .. ':' .. queue, n)
  end
end

-- A publish of n messages to a queue with maxlen and overflow "reject": the QUEUEFULL
-- error reply (the event counted) when they do not fit, else nil.
local function refuse_full(queue, list, maxlen, overflow, n)
  if not maxlen or maxlen <= 0 or overflow == 'drop_oldest' or n <= 0 then
    return nil
  end
  local length = redis.call('LLEN', list) + redis.call('ZCARD', queue .. ':delayed')
  if length + n <= maxlen then
    return nil
  end
  count_event('queue_full', queue, 1)
  return redis.error_reply('QUEUEFULL queue ' .. queue .. ' holds ' .. length .. ' of at most ' .. maxlen .. ' messages')
end

local function del_many(keys)
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
end

local function ns_of(q, g)
  if g == '' then
    return q
  end
  return q .. '#' .. g
end

local function dlq_of(q, g)
  if g == '' then
    return q .. ':dead'
  end
  return q .. ':dead@' .. g
end

-- the list of messages of ordering key k waiting while k is held
local function okwait(q, g, k)
  return q .. '#' .. g .. ':ok.' .. k
end

-- A setting of group g, else of the queue.
local function setting(q, g, name)
  local value
  if g ~= '' then
    value = redis.call('HGET', q .. '#' .. g .. ':settings', name)
  end
  return value or redis.call('HGET', q .. ':settings', name)
end

-- A body nobody holds any more: deleted with its look counter, or, with keep_ms > 0,
-- left to expire (the original left popped bodies in place and clients read them).
local function drop_body(key, keep_ms)
  if keep_ms and keep_ms > 0 then
    redis.call('PEXPIRE', key, keep_ms)
    redis.call('DEL', key .. ':refcount')
  else
    redis.call('DEL', key, key .. ':refcount')
  end
end

-- One holder (the default consumers or a group) is done with the body of key:
-- it goes when the last holder is done. No <q>:refs field means one holder.
local function release(q, key, keep_ms)
  local refs = q .. ':refs'
  if redis.call('HINCRBY', refs, key, -1) > 0 then
    return false
  end
  redis.call('HDEL', refs, key)
  drop_body(key, keep_ms)
  redis.call('HDEL', q .. ':meta', key)
  redis.call('HDEL', q .. ':okey', key)
  redis.call('HDEL', q .. ':sqsfirst', key)
  return true
end

-- release() for many keys: in bulk when the queue never had groups or metadata.
local function release_many(q, keys, keep_ms)
  if #keys == 0 then
    return
  end
  if redis.call('EXISTS', q .. ':refs') == 1 then
    for _, key in ipairs(keys) do
      release(q, key, keep_ms)
    end
    return
  end
  for i = 1, #keys, 1000 do
    local part = {unpack(keys, i, math.min(i + 999, #keys))}
    if keep_ms and keep_ms > 0 then
      for _, key in ipairs(part) do
        redis.call('PEXPIRE', key, keep_ms)
      end
      redis.call('DEL', unpack(refcounts(part)))
    else
      local gone = refcounts(part)
      for _, key in ipairs(part) do
        gone[#gone + 1] = key
      end
      redis.call('DEL', unpack(gone))
    end
    if redis.call('EXISTS', q .. ':meta') == 1 then
      redis.call('HDEL', q .. ':meta', unpack(part))
    end
    if redis.call('EXISTS', q .. ':okey') == 1 then
      redis.call('HDEL', q .. ':okey', unpack(part))
    end
    if redis.call('EXISTS', q .. ':sqsfirst') == 1 then
      redis.call('HDEL', q .. ':sqsfirst', unpack(part))
    end
  end
end

-- key is done in group g (acked, dead, deleted, popped): if it held its ordering key,
-- the next waiting message of that key takes the hold and goes to the head of the line.
local function pass_ordering(q, g, key)
  local k = redis.call('HGET', q .. ':okey', key)
  if not k then
    return
  end
  local ns = ns_of(q, g)
  local okeys = ns .. ':okeys'
  if redis.call('HGET', okeys, k) ~= key then
    return
  end
  local next_key = redis.call('RPOP', okwait(q, g, k))
  if next_key then
    redis.call('HSET', okeys, k, next_key)
    redis.call('RPUSH', ns .. ':queue', next_key)
    redis.call('DECR', ns .. ':parked')
  else
    redis.call('HDEL', okeys, k)
  end
end

-- key is finished for group g: ordering hold passed on, counters and body released.
local function finish(q, g, key)
  local ns = ns_of(q, g)
  pass_ordering(q, g, key)
  redis.call('HDEL', ns .. ':deliveries', key)
  redis.call('HDEL', ns .. ':enqueued', key)
  return release(q, key)
end

-- Move a message body to the dead-letter queue of group g (an ordinary queue; the
-- dead_letter_queue setting of <q> or of the group names another), keeping its
-- delivery count and metadata and recording why. Group g is done with the original key.
local function dead_letter(q, g, key, count, reason, now)
  local body = redis.call('GET', key)
  local meta = redis.call('HGET', q .. ':meta', key)
  finish(q, g, key)
  if not body then
    return nil
  end
  local dq = redis.call('HGET', ns_of(q, g) .. ':settings', 'dead_letter_queue') or dlq_of(q, g)
  local newkey = dq .. ':' .. redis.call('INCR', dq .. ':UUID')
  redis.call('SET', newkey, body)
  if meta then
    redis.call('HSET', dq .. ':meta', newkey, meta)
  end
  redis.call('LPUSH', dq .. ':queue', newkey)
  redis.call('SADD', 'QUEUESET', dq)
  redis.call('HSET', dq .. ':deliveries', newkey, count)
  redis.call('HSET', dq .. ':enqueued', newkey, now)
  redis.call('HSET', dq .. ':deadinfo', newkey,
    cjson.encode({reason = reason, from = key, deliveries = tonumber(count), at = now}))
  count_event('dead_lettered', q, 1)
  return newkey
end

-- Housekeeping every take runs first: due delayed messages join the back of the
-- queue, expired leases go back to its head (or to the dead letters once they
-- were delivered max_receives times). Bounded per call.
local function promote(q, g, now, default_max_receives)
  local ns = ns_of(q, g)
  local list = ns .. ':queue'
  local due = redis.call('ZRANGEBYSCORE', ns .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', ns .. ':delayed', unpack(due))
    redis.call('LPUSH', list, unpack(due))
  end
  local inflight = ns .. ':inflight'
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    local max = tonumber(setting(q, g, 'max_receives')) or default_max_receives
    redis.call('ZREM', inflight, unpack(expired))
    redis.call('HDEL', ns .. ':leases', unpack(expired))
    -- earliest deadline ends up at the very head (consumers RPOP); an ordering
    -- key stays held by its message until that message is done
    for i = #expired, 1, -1 do
      local key = expired[i]
      local count = tonumber(redis.call('HGET', ns .. ':deliveries', key)) or 0
      if count >= max then
        dead_letter(q, g, key, count, 'max_receives', now)
      else
        redis.call('RPUSH', list, key)
      end
    end
  end
  return #due + #expired
end

-- <ns>:delivered counts the messages handed out to the consumers of ns (the
-- default consumers of a queue, or one of its groups): the dashboard's rates.
local function count_delivered(ns, n)
  if n > 0 then
    redis.call('INCRBY', ns .. ':delivered', n)
  end
end

-- The plain pop, in bulk: a few commands per batch rather than six per message.
-- keep_ms > 0 leaves each body in place for that long (see drop_body).
-- Returns key, body, deliveries, token (""), metadata ("" when none) per message.
local function pop_plain(q, g, n, keep_ms)
  local ns = ns_of(q, g)
  local list = ns .. ':queue'
  local with_meta = redis.call('EXISTS', q .. ':meta') == 1
  local ordered = redis.call('EXISTS', ns .. ':okeys') == 1
  local out = {}
  local got = 0
  local expired = 0
  while got < n do
    local want = n - got
    local keys = redis.call('RPOP', list, want)
    if not keys then
      break
    end
    local mine = {}
    for _, key in ipairs(keys) do
      if owns(q, key) then
        mine[#mine + 1] = key
      end
    end
    if #mine > 0 then
      local bodies = redis.call('MGET', unpack(mine))
      local counts = redis.call('HMGET', ns .. ':deliveries', unpack(mine))
      local metas = with_meta and redis.call('HMGET', q .. ':meta', unpack(mine)) or {}
      if ordered then
        for _, key in ipairs(mine) do
          pass_ordering(q, g, key)
        end
      end
      release_many(q, mine, keep_ms)
      redis.call('HDEL', ns .. ':deliveries', unpack(mine))
      redis.call('HDEL', ns .. ':enqueued', unpack(mine))
      for i, key in ipairs(mine) do
        if bodies[i] then
          -- a counter, not #out: this loop runs for every message a dispatch takes
          local at = got * 5
          got = got + 1
          out[at + 1] = key
          out[at + 2] = bodies[i]
          out[at + 3] = tonumber(counts[i]) or 0
          out[at + 4] = ''
          out[at + 5] = metas[i] or ''
        else
          expired = expired + 1
        end
      end
    end
    if #keys < want then
      break
    end
  end
  count_delivered(ns, got)
  count_event('expired', q, expired)
  return out
end

-- messages parked behind a held ordering key that one call may look past
local MAX_PARKED_PER_CALL = 1000

-- Pop up to n live messages: expired (ttl) bodies and foreign elements are skipped.
-- With lease_ms > 0 each message is leased (kept, counted, hidden until the deadline)
-- and its token is tokens_prefix .. i; otherwise it is deleted (or, with keep_ms,
-- left to expire: see drop_body). A leased message
-- whose ordering key is held by another message waits in that key's list instead.
-- Returns a flat list: key, body, deliveries, token ("" when not leased), metadata.
local function pop(q, g, n, lease_ms, tokens_prefix, now, keep_ms)
  if lease_ms == 0 then
    return pop_plain(q, g, n, keep_ms or 0)
  end
  local ns = ns_of(q, g)
  local list = ns .. ':queue'
  local with_meta = redis.call('EXISTS', q .. ':meta') == 1
  local ordered = redis.call('EXISTS', q .. ':okey') == 1
  local out = {}
  local got = 0
  local parked = 0
  while got < n and parked < MAX_PARKED_PER_CALL do
    local key = redis.call('RPOP', list)
    if not key then
      break
    end
    if owns(q, key) then
      local body = redis.call('GET', key)
      local k = ordered and redis.call('HGET', q .. ':okey', key)
      if not body then
        -- its ttl ran out while it waited
        finish(q, g, key)
        count_event('expired', q, 1)
      elseif k and (redis.call('HGET', ns .. ':okeys', k) or key) ~= key then
        redis.call('LPUSH', okwait(q, g, k), key)
        redis.call('INCR', ns .. ':parked')
        parked = parked + 1
      else
        if k then
          redis.call('HSET', ns .. ':okeys', k, key)
        end
        got = got + 1
        local count = redis.call('HINCRBY', ns .. ':deliveries', key, 1)
        local token = tokens_prefix .. got
        redis.call('ZADD', ns .. ':inflight', now + lease_ms, key)
        redis.call('HSET', ns .. ':leases', key, token)
        out[#out + 1] = key
        out[#out + 1] = body
        out[#out + 1] = count
        out[#out + 1] = token
        out[#out + 1] = with_meta and redis.call('HGET', q .. ':meta', key) or ''
      end
    end
  end
  count_delivered(ns, got)
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

-- <ns> is streamed by some process (publishers must notify)
local function listen(ns, ttl)
  mark(ns .. ':listeners', ttl)
end

-- Forget Idempotency-Keys (and SQS deduplication ids) whose window ended, 100 a call.
local function sweep_idempotency(queue, now)
  local expiry = queue .. ':idempotencyexp'
  local stale = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', expiry, unpack(stale))
    redis.call('HDEL', queue .. ':idempotency', unpack(stale))
  end
end

-- Store new messages first..last of <q> for its default consumers and every group (not
-- queued yet): body (with the queue's ttl, seconds, or none), enqueued time, metadata
-- blob, ordering key, holders (<q>:refs when there are groups). item(i) returns the
-- message's key, body, blob ("" none) and ordering key (""). One command per 1000
-- messages, not several per message.
local function store_bodies(queue, groups, ttl, now, first, last, item)
  for from = first, last, 1000 do
    local final = math.min(from + 999, last)
    local bodies, times, metas, okeys, refs = {}, {}, {}, {}, {}
    for i = from, final do
      local key, body, blob, okey = item(i)
      bodies[#bodies + 1] = key
      bodies[#bodies + 1] = body
      times[#times + 1] = key
      times[#times + 1] = now
      if blob ~= '' then
        metas[#metas + 1] = key
        metas[#metas + 1] = blob
      end
      if okey ~= '' then
        okeys[#okeys + 1] = key
        okeys[#okeys + 1] = okey
      end
      if #groups > 0 then
        refs[#refs + 1] = key
        refs[#refs + 1] = #groups + 1
      end
    end
    if ttl and ttl ~= '' then
      for n = 1, #bodies, 2 do
        redis.call('SET', bodies[n], bodies[n + 1], 'EX', ttl)
      end
    else
      redis.call('MSET', unpack(bodies))
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
end

-- overflow drop_oldest: the default consumers' oldest messages go (as if consumed)
-- while the list holds more than maxlen, at most pushed + 256 of them in one call: a
-- publish of pushed messages never leaves the queue longer than it was, and a maxlen
-- lowered under a long queue is reached over the next publishes, each call within
-- the time budget (a drop costs some 12 us).
local function drop_oldest(queue, list, maxlen, overflow, pushed)
  if not maxlen or maxlen <= 0 or overflow ~= 'drop_oldest' then
    return
  end
  local extra = math.min(redis.call('LLEN', list) - maxlen, pushed + 256)
  for _ = 1, extra do
    local oldest = redis.call('RPOP', list)
    if not oldest then
      return
    end
    if owns(queue, oldest) then
      finish(queue, '', oldest)
    end
  end
end

-- Append a broadcast batch (key, body, metadata, ...) to the bounded history of <q>.
local function record_history(queue, batch, default_size)
  local size = tonumber(redis.call('HGET', queue .. ':settings', 'history_size')) or default_size
  if size <= 0 then
    return
  end
  local history = queue .. ':history'
  for i = 1, #batch, 3 do
    redis.call('LPUSH', history, batch[i])
    redis.call('HSET', queue .. ':historybodies', batch[i], batch[i + 1])
    if batch[i + 2] ~= '' then
      redis.call('HSET', queue .. ':historymeta', batch[i], batch[i + 2])
    end
  end
  local extra = redis.call('LLEN', history) - size
  if extra > 0 then
    local old = redis.call('RPOP', history, extra)
    redis.call('HDEL', queue .. ':historybodies', unpack(old))
    if redis.call('EXISTS', queue .. ':historymeta') == 1 then
      redis.call('HDEL', queue .. ':historymeta', unpack(old))
    end
  end
end

-- Counts of one group of q: backlog (waiting + parked), in flight, delayed, dead,
-- age of the oldest waiting message (ms, -1 unknown).
local function group_counts(q, g, now)
  local ns = ns_of(q, g)
  local oldest = redis.call('LINDEX', ns .. ':queue', -1)
  local age = -1
  if oldest then
    local at = tonumber(redis.call('HGET', ns .. ':enqueued', oldest))
    if at then
      age = now - at
    end
  end
  return {redis.call('LLEN', ns .. ':queue') + (tonumber(redis.call('GET', ns .. ':parked')) or 0),
          redis.call('ZCARD', ns .. ':inflight'), redis.call('ZCARD', ns .. ':delayed'),
          redis.call('LLEN', dlq_of(q, g) .. ':queue'), age}
end
