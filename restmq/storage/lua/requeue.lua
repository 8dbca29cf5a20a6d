-- requeue.lua: put popped messages back at the head, oldest first (their consumer left
-- before they could be handed over).
-- KEYS[1] = <ns>:queue
-- ARGV[1] = queue name  ARGV[2] = consumer group or ""
-- ARGV[3..] = key, body, metadata, key, body, metadata ... in the order they were popped
-- A body still held by another group gets its holder back; one that is gone, or only
-- left at its key for popped_ttl (no holder: it would expire), is stored again.
-- Returns how many were put back (they no longer count as delivered: <ns>:delivered);
-- when any were, the consumers of the queue (group) are woken on every process.
local queue = ARGV[1]
local n = 0
for i = #ARGV - 2, 3, -3 do
  local key = ARGV[i]
  if owns(queue, key) then
    if tonumber(redis.call('HGET', queue .. ':refs', key) or '0') > 0 then
      redis.call('HINCRBY', queue .. ':refs', key, 1)
    else
      redis.call('SET', key, ARGV[i + 1])
      if ARGV[i + 2] ~= '' then
        redis.call('HSET', queue .. ':meta', key, ARGV[i + 2])
      end
    end
    redis.call('RPUSH', KEYS[1], key)
    n = n + 1
  end
end
if n > 0 then
  local ns = ns_of(queue, ARGV[2])
  redis.call('DECRBY', ns .. ':delivered', n)
  redis.call('PUBLISH', 'restmq:notify', 'w' .. ns)
end
return n
