-- purge.lua: empty a queue for good: message bodies too (the original leaked them).
-- KEYS[1] = <q>:queue  KEYS[2] = QUEUESET (the script also touches the other keys of <q>)
-- ARGV[1] = queue name  ARGV[2] = notify channel
-- Policy, status and settings are configuration and stay; the id counter stays so
-- keys are never reused. Tells every process to close the queue's streams.
-- Returns the number of messages removed.
local queue = ARGV[1]
local bodies = {}
local function collect(keys)
  for _, key in ipairs(keys) do
    if owns(queue, key) then
      bodies[#bodies + 1] = key
    end
  end
end
collect(redis.call('LRANGE', KEYS[1], 0, -1))
collect(redis.call('ZRANGE', queue .. ':inflight', 0, -1))
collect(redis.call('ZRANGE', queue .. ':delayed', 0, -1))
local removed = 0
for i = 1, #bodies, 1000 do
  removed = removed + redis.call('DEL', unpack(bodies, i, math.min(i + 999, #bodies)))
end
del_many(refcounts(bodies))
redis.call('DEL', KEYS[1], queue .. ':inflight', queue .. ':delayed', queue .. ':leases',
  queue .. ':deliveries', queue .. ':history', queue .. ':historybodies',
  queue .. ':enqueued', queue .. ':deadinfo')
redis.call('SREM', KEYS[2], queue)
redis.call('PUBLISH', ARGV[2], 'p' .. queue)
return removed
