-- extend.lua: push lease deadlines out (a heartbeat for long jobs).
-- KEYS[1] = <ns>:inflight  KEYS[2] = <ns>:leases
-- ARGV[1] = queue name  ARGV[2] = new lease ms from now  ARGV[3..] = key, token, ...
-- Returns {extended count, refused key, ...}.
local now = now_ms()
local extended = 0
local refused = {}
for i = 3, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[2], key) == token then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), key)
    extended = extended + 1
  else
    refused[#refused + 1] = key
  end
end
table.insert(refused, 1, extended)
return refused
