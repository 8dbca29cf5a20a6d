-- purge.lua: empty a queue for good: message bodies too (the original leaked them),
-- and the backlog of each of its consumer groups (the groups themselves stay).
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
local function purge_ns(g)
  local ns = ns_of(queue, g)
  collect(redis.call('LRANGE', ns .. ':queue', 0, -1))
  collect(redis.call('ZRANGE', ns .. ':inflight', 0, -1))
  collect(redis.call('ZRANGE', ns .. ':delayed', 0, -1))
  for _, k in ipairs(redis.call('HKEYS', ns .. ':okeys')) do
    local wait = okwait(queue, g, k)
    collect(redis.call('LRANGE', wait, 0, -1))
    redis.call('DEL', wait)
  end
  redis.call('DEL', ns .. ':queue', ns .. ':inflight', ns .. ':delayed', ns .. ':leases',
    ns .. ':deliveries', ns .. ':enqueued', ns .. ':okeys', ns .. ':parked')
end
purge_ns('')
local groups = redis.call('HKEYS', queue .. ':groups')
for _, g in ipairs(groups) do
  purge_ns(g)
end
local removed = 0
for i = 1, #bodies, 1000 do
  removed = removed + redis.call('DEL', unpack(bodies, i, math.min(i + 999, #bodies)))
end
del_many(refcounts(bodies))
redis.call('DEL', KEYS[1], queue .. ':inflight', queue .. ':delayed', queue .. ':leases',
  queue .. ':deliveries', queue .. ':history', queue .. ':historybodies',
  queue .. ':historymeta', queue .. ':enqueued', queue .. ':deadinfo', queue .. ':refs',
  queue .. ':meta', queue .. ':okey')
redis.call('SREM', KEYS[2], queue)
redis.call('PUBLISH', ARGV[2], 'p' .. queue)
for _, g in ipairs(groups) do
  redis.call('PUBLISH', ARGV[2], 'p' .. ns_of(queue, g))
end
return removed
