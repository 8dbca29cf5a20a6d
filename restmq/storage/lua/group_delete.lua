-- group_delete.lua: remove consumer group g of q and its backlog, in bounded steps.
-- KEYS[1] = <q>:groups (the script also touches the keys of <q>#<g>)
-- ARGV[1] = queue name  ARGV[2] = group name  ARGV[3] = notify channel
-- ARGV[4] = at most this many messages released per call
-- The first call unregisters the group (no new messages reach it) and tells every
-- process to close its streams; each call releases up to ARGV[4] of its messages
-- (bodies go when no other holder needs them). Call again while it returns more = 1.
-- Returns {existed (0|1), released, more (0|1)}.
local queue, group = ARGV[1], ARGV[2]
local ns = ns_of(queue, group)
local existed = redis.call('HDEL', KEYS[1], group)
if existed == 1 then
  redis.call('PUBLISH', ARGV[3], 'p' .. ns)
end
local budget = tonumber(ARGV[4])
local released = 0
local function drain(keys)
  for _, key in ipairs(keys) do
    if owns(queue, key) then
      release(queue, key)
      released = released + 1
    end
  end
end
local function take_list(list)
  while released < budget do
    local keys = redis.call('RPOP', list, math.min(500, budget - released))
    if not keys then
      return
    end
    drain(keys)
  end
end
local function take_zset(zset)
  while released < budget do
    local keys = redis.call('ZRANGE', zset, 0, math.min(500, budget - released) - 1)
    if #keys == 0 then
      return
    end
    redis.call('ZREM', zset, unpack(keys))
    drain(keys)
  end
end
take_list(ns .. ':queue')
take_zset(ns .. ':inflight')
take_zset(ns .. ':delayed')
for _, k in ipairs(redis.call('HKEYS', ns .. ':okeys')) do
  if released >= budget then
    break
  end
  take_list(okwait(queue, group, k))
  if redis.call('EXISTS', okwait(queue, group, k)) == 0 then
    redis.call('HDEL', ns .. ':okeys', k)
  end
end
if released >= budget then
  return {existed, released, 1}
end
redis.call('DEL', ns .. ':queue', ns .. ':inflight', ns .. ':delayed', ns .. ':leases',
  ns .. ':deliveries', ns .. ':enqueued', ns .. ':okeys', ns .. ':parked', ns .. ':settings',
  ns .. ':listeners', ns .. ':poppers')
return {existed, released, 0}
