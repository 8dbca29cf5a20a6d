-- purge_start.lua: empty a queue at once, for its default consumers and every consumer
-- group (the groups themselves stay): each list and sorted set that holds its message
-- keys (the queue, inflight and delayed of every namespace, the ordering-key waiting
-- lists) is renamed aside and named in the purge's job list; the bookkeeping hashes are
-- unlinked (Redis frees big ones in the background). purge_chunk.lua then deletes the
-- message bodies a bounded chunk per call. The work here is O(groups + held ordering
-- keys), not O(messages).
-- KEYS[1] = <q>:queue  KEYS[2] = QUEUESET  KEYS[3] = restmq:purges  KEYS[4] = the job list
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = the restmq:purges entry
-- ARGV[4] = the prefix of the set-aside keys (a number is appended)
-- Policy, status and settings are configuration and stay; the id counter stays so keys
-- are never reused. Tells every process to close the queue's streams (and its groups').
-- Returns how many message keys wait to be deleted.
local queue = ARGV[1]
local pending = 0
local moved = 0
local function set_aside(key, size_command)
  if redis.call('EXISTS', key) == 1 then
    pending = pending + redis.call(size_command, key)
    moved = moved + 1
    local aside = ARGV[4] .. moved
    redis.call('RENAME', key, aside)
    redis.call('LPUSH', KEYS[4], aside)
  end
end
local function purge_ns(g)
  local ns = ns_of(queue, g)
  set_aside(ns .. ':queue', 'LLEN')
  set_aside(ns .. ':inflight', 'ZCARD')
  set_aside(ns .. ':delayed', 'ZCARD')
  for _, k in ipairs(redis.call('HKEYS', ns .. ':okeys')) do
    set_aside(okwait(queue, g, k), 'LLEN')
  end
  redis.call('UNLINK', ns .. ':leases', ns .. ':deliveries', ns .. ':enqueued', ns .. ':okeys',
    ns .. ':parked')
end
purge_ns('')
local groups = redis.call('HKEYS', queue .. ':groups')
for _, g in ipairs(groups) do
  purge_ns(g)
end
redis.call('UNLINK', queue .. ':history', queue .. ':historybodies', queue .. ':historymeta',
  queue .. ':deadinfo', queue .. ':refs', queue .. ':meta', queue .. ':okey')
redis.call('SREM', KEYS[2], queue)
if moved > 0 then
  redis.call('SADD', KEYS[3], ARGV[3])
end
redis.call('PUBLISH', ARGV[2], 'p' .. queue)
for _, g in ipairs(groups) do
  redis.call('PUBLISH', ARGV[2], 'p' .. ns_of(queue, g))
end
return pending
