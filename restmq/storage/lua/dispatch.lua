-- dispatch.lua: take messages for the streaming subscribers of one process.
-- KEYS[1] = <ns>:queue (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = max to pop when broadcast  ARGV[3] = max when roundrobin
-- ARGV[4] = listeners ttl ms  ARGV[5] = history size  ARGV[6] = broadcast channel
-- ARGV[7] = default max_receives  ARGV[8] = "1" if this process has broadcast subscribers
-- ready for publish-through  ARGV[9] = "1" if it has consumers that pop from the list
-- (acked streams, long-polls)  ARGV[10] = consumer group or "" (a group's members always
-- compete: round robin)
-- Marks <ns> as streamed (so publishers notify), and unless the queue is stopped pops
-- messages. Broadcast batches go to the history and to the broadcast channel, from
-- which every process (this one included) delivers them: one ordered stream.
-- Returns {state (0 stopped|1 started), policy (1|2), length left, ms until the next
-- delayed message is due (-1 none), key, body, deliveries, token, metadata, ...}.
local queue, group = ARGV[1], ARGV[10] or ''
local ns = ns_of(queue, group)
listen(ns, ARGV[4])
local policy = 2
if group == '' then
  policy = redis.call('GET', queue .. ':queuepolicy') == '2' and 2 or 1
end
if ARGV[8] == '1' and policy == 1 then
  mark(queue .. ':bsubs', ARGV[4])
end
if ARGV[9] == '1' then
  mark(ns .. ':poppers', ARGV[4])
end
local now = now_ms()
local function next_due()
  local first = redis.call('ZRANGE', ns .. ':delayed', 0, 0, 'WITHSCORES')
  if first[2] then
    return math.max(0, tonumber(first[2]) - now)
  end
  return -1
end
if is_stopped(queue) then
  return {0, policy, redis.call('LLEN', ns .. ':queue'), next_due()}
end
promote(queue, group, now, tonumber(ARGV[7]))
local n = tonumber(policy == 1 and ARGV[2] or ARGV[3])
local out = pop(queue, group, n, 0, '', now)
if policy == 1 and #out > 0 then
  local batch = {}
  for i = 1, #out, 5 do
    batch[#batch + 1] = out[i]
    batch[#batch + 1] = out[i + 1]
    batch[#batch + 1] = out[i + 4]
  end
  record_history(queue, batch, tonumber(ARGV[5]))
  redis.call('PUBLISH', ARGV[6], cjson.encode(batch))
end
table.insert(out, 1, next_due())
table.insert(out, 1, redis.call('LLEN', ns .. ':queue'))
table.insert(out, 1, policy)
table.insert(out, 1, 1)
return out
