-- requeue.lua: put popped messages back at the head, oldest first (their consumer left
-- before they could be handed over).
-- KEYS[1] = <ns>:queue
-- ARGV[1] = queue name  ARGV[2] = consumer group or ""
-- ARGV[3..] = key, body, metadata, key, body, metadata ... in the order they were popped
-- A body still held by another group gets its holder back; one that is gone, or only
-- left at its key for popped_ttl (no holder: it would expire), is stored again with
-- its metadata and ordering key (the pop finished them). Either way it is enqueued
-- again now (its age starts over).
-- Returns how many were put back (they no longer count as delivered: <ns>:delivered);
-- when any were, the consumers of the queue (group) are woken on every process.
local queue = ARGV[1]
local ns = ns_of(queue, ARGV[2])
local now = now_ms()
local n = 0
for i = #ARGV - 2, 3, -3 do
  local key = ARGV[i]
  if owns(queue, key) then
    if tonumber(redis.call('HGET', queue .. ':refs', key) or '0') > 0 then
      redis.call('HINCRBY', queue .. ':refs', key, 1)
    else
      redis.call('SET', key, ARGV[i + 1])
      local blob = ARGV[i + 2]
      if blob ~= '' then
        redis.call('HSET', queue .. ':meta', key, blob)
        local ok, meta = pcall(cjson.decode, blob)
        if ok and type(meta) == 'table' and type(meta.k) == 'string' then
          redis.call('HSET', queue .. ':okey', key, meta.k)
        end
      end
    end
    redis.call('HSET', ns .. ':enqueued', key, now)
    redis.call('RPUSH', KEYS[1], key)
    n = n + 1
  end
end
if n > 0 then
  redis.call('DECRBY', ns .. ':delivered', n)
  redis.call('PUBLISH', 'restmq:notify', 'w' .. ns)
end
return n
