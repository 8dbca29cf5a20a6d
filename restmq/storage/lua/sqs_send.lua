-- sqs_send.lua: store the messages of a SendMessage / SendMessageBatch.
-- KEYS[1] = <q>:queue (the script also touches <q>:UUID, <q>:sqs, <q>:settings, <q>:groups,
-- the lists, delayed sets and enqueued times of <q> and its groups, <q>:meta, <q>:okey,
-- <q>:refs, <q>:idempotency, <q>:idempotencyexp, <q>:listeners, QUEUESET, queuestat::<q>)
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = largest body when the queue
-- has no MaximumMessageSize  ARGV[4] = deduplication window ms  ARGV[5] = "" (bodies
-- only: each entry is its body, nothing else) or "m" (each entry is the 7 fields below)
-- ARGV[6] = the sending process's id or "": its wake-ups read "w<ns> <id>" (it wakes
-- its own consumers of the namespaces this returns), then per entry: body, its size with its attributes (bytes, as SQS counts), delay
-- seconds ("" for the queue's DelaySeconds), metadata blob (""), ordering key (FIFO
-- MessageGroupId, ""), MessageDeduplicationId (""), SHA-256 of the body (hex).
-- Each entry is stored, or refused alone: "!size" when it is over the queue's
-- MaximumMessageSize, "!dedup" when a FIFO queue without ContentBasedDeduplication gets
-- no deduplication id. On a FIFO queue an entry whose deduplication id (or, with
-- ContentBasedDeduplication, body) was seen within the window (per MessageGroupId with
-- DeduplicationScope messageGroup) is not stored again and answers the first key.
-- The queue's maxlen setting refuses the whole batch.
-- Returns {now ms, key or "!size" or "!dedup" per entry, then the namespaces woken}
-- | error "NOQUEUE ..." | "QUEUEFULL ...".
local queue = ARGV[1]
local list = KEYS[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
local now = now_ms()
local attrs = redis.call('HMGET', queue .. ':sqs', 'DelaySeconds', 'MaximumMessageSize', 'FifoQueue',
  'ContentBasedDeduplication', 'DeduplicationScope')
local fifo = attrs[3] == 'true'
local by_content = attrs[4] == 'true'
local per_group = attrs[5] == 'messageGroup'
local default_delay = tonumber(attrs[1]) or 0
local max_size = tonumber(attrs[2]) or tonumber(ARGV[3])
local settings = redis.call('HMGET', queue .. ':settings', 'maxlen', 'overflow', 'ttl')
local maxlen = tonumber(settings[1])
local ttl = settings[3]
local first = 7
local plain = ARGV[5] == ''
local stride = plain and 1 or 7
local count = (#ARGV - first + 1) / stride
-- field n of entry i (a bodies-only call has defaults for all but the body and its size)
local function field(i, n)
  if plain then
    if n == 1 then
      return tostring(#ARGV[i])
    end
    return ''
  end
  return ARGV[i + n]
end
local full = refuse_full(queue, list, maxlen, settings[2], count)
if full then
  return full
end
local idempotency, expiry = queue .. ':idempotency', queue .. ':idempotencyexp'
sweep_idempotency(queue, now)
local groups = redis.call('HKEYS', queue .. ':groups')
-- first the decisions (size, deduplication), then the writes in bulk: a few
-- commands per batch rather than several per message
local answers, stored, batch_dedup = {}, {}, {}
for i = first, #ARGV, stride do
  local dedup = field(i, 5)
  if fifo then
    if dedup == '' and by_content then
      dedup = field(i, 6)
    end
    if dedup ~= '' then
      -- a newline never appears in an Idempotency-Key header: no clash with REST's keys
      dedup = '\nsqs\n' .. (per_group and (field(i, 4) .. '\n') or '') .. dedup
    end
  else
    dedup = ''
  end
  local seen = dedup ~= '' and redis.call('HGET', idempotency, dedup)
  if fifo and dedup == '' then
    answers[#answers + 1] = '!dedup'
  elseif seen then
    answers[#answers + 1] = cjson.decode(seen)[1]
  elseif dedup ~= '' and batch_dedup[dedup] then
    answers[#answers + 1] = {batch_dedup[dedup]}
  elseif tonumber(field(i, 1)) > max_size then
    answers[#answers + 1] = '!size'
  else
    stored[#stored + 1] = {i, dedup}
    answers[#answers + 1] = {#stored}
    if dedup ~= '' then
      batch_dedup[dedup] = #stored
    end
  end
end
local count_stored = #stored
local keys = {}
local pushed = 0
if count_stored > 0 then
  local last = redis.call('INCRBY', queue .. ':UUID', count_stored)
  local dedups, expiries, immediate, delayed = {}, {}, {}, {}
  for n, entry in ipairs(stored) do
    local i, dedup = entry[1], entry[2]
    local key = queue .. ':' .. (last - count_stored + n)
    keys[n] = key
    if dedup ~= '' then
      dedups[#dedups + 1] = dedup
      dedups[#dedups + 1] = cjson.encode({key})
      expiries[#expiries + 1] = now + tonumber(ARGV[4])
      expiries[#expiries + 1] = dedup
    end
    local delay = tonumber(field(i, 2)) or default_delay
    if delay > 0 then
      delayed[#delayed + 1] = now + delay * 1000
      delayed[#delayed + 1] = key
    else
      immediate[#immediate + 1] = key
    end
  end
  store_bodies(queue, groups, ttl, now, 1, count_stored, function(n)
    local i = stored[n][1]
    return keys[n], ARGV[i], field(i, 3), field(i, 4)
  end)
  if #dedups > 0 then
    -- the same table add.lua keeps for Idempotency-Key, with SQS's window
    redis.call('HSET', idempotency, unpack(dedups))
    redis.call('ZADD', expiry, unpack(expiries))
  end
  local namespaces = {queue}
  for _, g in ipairs(groups) do
    namespaces[#namespaces + 1] = queue .. '#' .. g
  end
  for _, ns in ipairs(namespaces) do
    if #immediate > 0 then
      redis.call('LPUSH', ns .. ':queue', unpack(immediate))
    end
    if #delayed > 0 then
      redis.call('ZADD', ns .. ':delayed', unpack(delayed))
    end
  end
  pushed = #immediate
end
local out = {now}
for _, answer in ipairs(answers) do
  out[#out + 1] = type(answer) == 'table' and keys[answer[1]] or answer
end
drop_oldest(queue, list, maxlen, settings[2], pushed)
if redis.call('SADD', 'QUEUESET', queue) == 1 then
  redis.call('SET', 'queuestat::' .. queue, '1', 'NX')
end
if pushed > 0 then
  local tag = ARGV[6] ~= '' and (' ' .. ARGV[6]) or ''
  local spaces = {queue}
  for _, g in ipairs(groups) do
    spaces[#spaces + 1] = queue .. '#' .. g
  end
  for _, ns in ipairs(spaces) do
    if redis.call('EXISTS', ns .. ':listeners') == 1 then
      redis.call('PUBLISH', ARGV[2], 'w' .. ns .. tag)
      out[#out + 1] = ns
    end
  end
end
return out
