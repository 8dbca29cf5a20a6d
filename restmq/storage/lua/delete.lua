-- delete.lua: remove one message by key, wherever it is (waiting, leased or delayed).
-- KEYS[1] = <q>:queue (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = message key
-- Returns 1 when a message was removed, 0 when there was none.
local queue, key = ARGV[1], ARGV[2]
if not owns(queue, key) then
  return 0
end
local removed = redis.call('LREM', KEYS[1], 0, key)
removed = removed + redis.call('ZREM', queue .. ':inflight', key)
removed = removed + redis.call('ZREM', queue .. ':delayed', key)
removed = removed + redis.call('DEL', key)
redis.call('HDEL', queue .. ':leases', key)
redis.call('HDEL', queue .. ':deliveries', key)
redis.call('HDEL', queue .. ':enqueued', key)
-- a dead letter's note (on a dead-letter queue)
redis.call('HDEL', queue .. ':deadinfo', key)
return removed > 0 and 1 or 0
