-- nack.lua: give leased messages back: at once (head of the queue) or after a delay;
-- to the dead letters once they were delivered max_receives times.
-- KEYS[1] = <ns>:inflight (the script also touches the other keys of <q> and <ns> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = delay ms (0 = now)  ARGV[3] = default max_receives
-- ARGV[4] = consumer group or ""  ARGV[5..] = key, token, key, token ...
-- A message keeps the hold on its ordering key: later ones of that key still wait.
-- Returns {nacked count, refused key, ...} (refused: the lease is not this receipt's).
local queue, group = ARGV[1], ARGV[4]
local ns = ns_of(queue, group)
local leases = ns .. ':leases'
local delay = tonumber(ARGV[2])
local max = tonumber(setting(queue, group, 'max_receives')) or tonumber(ARGV[3])
local now = now_ms()
local nacked = 0
local refused = {}
-- last receipt first, so that the first one ends up at the very head (consumers RPOP)
for i = #ARGV - 1, 5, -2 do
  local key, token = ARGV[i], ARGV[i + 1]
  if owns(queue, key) and redis.call('HGET', leases, key) == token then
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', leases, key)
    local count = tonumber(redis.call('HGET', ns .. ':deliveries', key)) or 0
    if count >= max then
      dead_letter(queue, group, key, count, 'max_receives', now)
    elseif delay > 0 then
      redis.call('ZADD', ns .. ':delayed', now + delay, key)
    else
      redis.call('RPUSH', ns .. ':queue', key)
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
if nacked > 0 and delay == 0 and redis.call('EXISTS', ns .. ':listeners') == 1 then
  redis.call('PUBLISH', 'restmq:notify', 'w' .. ns)
end
table.insert(refused, 1, nacked)
return refused
