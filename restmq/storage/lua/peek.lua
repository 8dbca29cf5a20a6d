-- peek.lua: look at the oldest message without taking it, counting the look.
-- KEYS[1] = <q>:queue  KEYS[2] = <q>:deliveries
-- ARGV[1] = queue name
-- The count is the original's "<key>:refcount" (INCR), which its brokers share.
-- Returns {key, body, looks, metadata} or {} when the queue is empty. Dead elements
-- (expired ttl, foreign values) at the tail are dropped on the way.
local queue = ARGV[1]
for _ = 1, 1000 do
  local key = redis.call('LINDEX', KEYS[1], -1)
  if not key then
    return {}
  end
  if owns(queue, key) then
    local body = redis.call('GET', key)
    if body then
      return {key, body, redis.call('INCR', key .. ':refcount'),
              redis.call('HGET', queue .. ':meta', key) or ''}
    end
    redis.call('DEL', key .. ':refcount')
  end
  redis.call('RPOP', KEYS[1])
  redis.call('HDEL', KEYS[2], key)
end
return {}
