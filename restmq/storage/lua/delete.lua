-- delete.lua: remove one message by key from the default consumers, wherever it is
-- (waiting, leased or delayed); groups that still hold it keep it.
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
redis.call('HDEL', queue .. ':leases', key)
if removed > 0 then
  finish(queue, '', key)
elseif redis.call('HEXISTS', queue .. ':refs', key) == 0 then
  -- a body no structure holds (pushed by another broker, or left behind)
  removed = redis.call('DEL', key)
  redis.call('DEL', key .. ':refcount')
  redis.call('HDEL', queue .. ':meta', key)
  redis.call('HDEL', queue .. ':okey', key)
end
-- a dead letter's note (on a dead-letter queue)
redis.call('HDEL', queue .. ':deadinfo', key)
return removed > 0 and 1 or 0
