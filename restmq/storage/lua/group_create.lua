-- group_create.lua: create consumer group g of queue q (idempotent); from now on every
-- message published to q is also queued for g.
-- KEYS[1] = <q>:groups
-- ARGV[1] = queue name  ARGV[2] = group name
-- Returns 1 when the group is new, 0 when it existed.
local queue = ARGV[1]
local created = redis.call('HSETNX', KEYS[1], ARGV[2], now_ms())
if redis.call('SADD', 'QUEUESET', queue) == 1 then
  redis.call('SET', 'queuestat::' .. queue, '1', 'NX')
end
return created
