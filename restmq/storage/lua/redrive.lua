-- redrive.lua: move up to N dead letters of <q> (oldest first) back to the end of <q>,
-- with a fresh key and delivery count; those of group g back to that group only.
-- QueueStore.redrive calls it in a loop, so that no call holds Redis for long however
-- many dead letters there are.
-- KEYS[1] = <dead-letter queue>:queue  KEYS[2] = <ns>:queue (the script also touches the other keys)
-- ARGV[1] = queue name  ARGV[2] = N (most list elements taken by this call, > 0)
-- ARGV[3] = notify channel  ARGV[4] = consumer group or ""
-- Returns {moved, dead letters left in the list}.
local queue, group = ARGV[1], ARGV[4] or ''
local dq = dlq_of(queue, group)
local ns = ns_of(queue, group)
local limit = tonumber(ARGV[2])
local now = now_ms()
local moved = 0
local taken = 0
while taken < limit do
  local old = redis.call('RPOP', KEYS[1])
  if not old then
    break
  end
  taken = taken + 1
  local body = redis.call('GET', old)
  local meta = redis.call('HGET', dq .. ':meta', old)
  redis.call('DEL', old, old .. ':refcount')
  redis.call('HDEL', dq .. ':deliveries', old)
  redis.call('HDEL', dq .. ':enqueued', old)
  redis.call('HDEL', dq .. ':deadinfo', old)
  redis.call('HDEL', dq .. ':meta', old)
  if body then
    local key = queue .. ':' .. redis.call('INCR', queue .. ':UUID')
    redis.call('SET', key, body)
    if meta then
      redis.call('HSET', queue .. ':meta', key, meta)
    end
    redis.call('HSET', ns .. ':enqueued', key, now)
    redis.call('LPUSH', KEYS[2], key)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('SADD', 'QUEUESET', queue)
  if redis.call('EXISTS', ns .. ':listeners') == 1 then
    redis.call('PUBLISH', ARGV[3], 'w' .. ns)
  end
end
return {moved, redis.call('LLEN', KEYS[1])}
