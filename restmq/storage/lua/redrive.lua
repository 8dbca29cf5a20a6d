-- redrive.lua: move dead letters of <q> (oldest first) back to the end of <q>, with a
-- fresh key and delivery count.
-- KEYS[1] = <q>:dead:queue  KEYS[2] = <q>:queue (the script also touches the other keys)
-- ARGV[1] = queue name  ARGV[2] = how many (0 = all)  ARGV[3] = notify channel
-- Returns how many were moved.
local queue = ARGV[1]
local dq = queue .. ':dead'
local limit = tonumber(ARGV[2])
local now = now_ms()
local moved = 0
while limit == 0 or moved < limit do
  local old = redis.call('RPOP', KEYS[1])
  if not old then
    break
  end
  local body = redis.call('GET', old)
  redis.call('DEL', old, old .. ':refcount')
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
return moved
