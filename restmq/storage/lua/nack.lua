-- nack.lua: give leased messages back: at once (head of the queue) or after a delay;
-- to the dead letters once they were delivered max_receives times.
-- KEYS[1] = <q>:inflight (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = delay ms (0 = now)  ARGV[3] = default max_receives
-- ARGV[4..] = key, token, key, token ...
-- Returns {nacked count, refused key, ...} (refused: the lease is not this receipt's).
local queue = ARGV[1]
local leases = queue .. ':leases'
local delay = tonumber(ARGV[2])
local max = tonumber(redis.call('HGET', queue .. ':settings', 'max_receives')) or tonumber(ARGV[3])
local now = now_ms()
local nacked = 0
local refused = {}
-- last receipt first, so that the first one ends up at the very head (consumers RPOP)
for i = #ARGV - 1, 4, -2 do
  local key, token = ARGV[i], ARGV[i + 1]
  if owns(queue, key) and redis.call('HGET', leases, key) == token then
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', leases, key)
    local count = tonumber(redis.call('HGET', queue .. ':deliveries', key)) or 0
    if count >= max then
      dead_letter(queue, key, count, 'max_receives', now)
    elseif delay > 0 then
      redis.call('ZADD', queue .. ':delayed', now + delay, key)
    else
      redis.call('RPUSH', queue .. ':queue', key)
    end
    nacked = nacked + 1
  else
    refused[#refused + 1] = key
  end
end
local n = #refused
for i = 1, math.floor(n / 2) do
  refused[i], refused[n - i + 1] = refused[n - i + 1], refused[i]
end
if nacked > 0 and delay == 0 and redis.call('EXISTS', queue .. ':listeners') == 1 then
  redis.call('PUBLISH', 'restmq:notify', 'w' .. queue)
end
table.insert(refused, 1, nacked)
return refused
