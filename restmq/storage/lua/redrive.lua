-- redrive.lua: move up to N dead letters of <q> (oldest first) back to the end of <q>,
-- with a fresh key and delivery count. QueueStore.redrive calls it in a loop, so that
-- no call holds Redis for long however many dead letters there are.
-- KEYS[1] = <q>:dead:queue  KEYS[2] = <q>:queue (the script also touches the other keys)
-- ARGV[1] = queue name  ARGV[2] = N (most list elements taken by this call, > 0)
-- ARGV[3] = notify channel
-- Returns {moved, dead letters left in the list}.
local queue = ARGV[1]
local dq = queue .. ':dead'
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
  redis.call('DEL', old)
  redis.call('HDEL', dq .. ':deliveries', old)
  redis.call('HDEL', dq .. ':enqueued', old)
  redis.call('HDEL', dq .. ':deadinfo', old)
  if body then
    local key = queue .. ':' .. redis.call('INCR', queue .. ':UUID')
    redis.call('SET', key, body)
    redis.call('HSET', queue .. ':enqueued', key, now)
    redis.call('LPUSH', KEYS[2], key)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('SADD', 'QUEUESET', queue)
  if redis.call('EXISTS', queue .. ':listeners') == 1 then
    redis.call('PUBLISH', ARGV[3], 'w' .. queue)
  end
end
return {moved, redis.call('LLEN', KEYS[1])}
