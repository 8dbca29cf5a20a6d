-- requeue.lua: put popped messages back at the head, oldest first (their consumer left
-- before they could be handed over).
-- KEYS[1] = <q>:queue
-- ARGV[1] = queue name  ARGV[2..] = key, body, key, body ... in the order they were popped
-- Returns how many were put back (they no longer count as delivered).
local queue = ARGV[1]
local n = 0
for i = #ARGV - 1, 2, -2 do
  local key = ARGV[i]
  if owns(queue, key) then
    redis.call('SET', key, ARGV[i + 1])
    redis.call('RPUSH', KEYS[1], key)
    n = n + 1
  end
end
if n > 0 then
  redis.call('DECRBY', queue .. ':delivered', n)
end
return n
