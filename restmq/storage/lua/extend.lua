-- extend.lua: push lease deadlines out (a heartbeat for long jobs).
-- KEYS[1] = <ns>:inflight  KEYS[2] = <ns>:leases
-- ARGV[1] = queue name  ARGV[2] = new lease ms from now, or "default:<ms>:<group>" for the
-- lease_seconds setting of the group (else of the queue; <ms> when neither has one)
-- ARGV[3..] = key, token, ...
-- Returns {extended count, refused key, ...}.
local now = now_ms()
local lease = ARGV[2]
local fallback, group = string.match(lease, '^default:(%d+):?(.*)$')
if fallback then
  local own = tonumber(setting(ARGV[1], group, 'lease_seconds'))
  lease = own and math.floor(own * 1000) or tonumber(fallback)
else
  lease = tonumber(lease)
end
local extended = 0
local refused = {}
for i = 3, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[2], key) == token then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, key)
    extended = extended + 1
  else
    refused[#refused + 1] = key
  end
end
table.insert(refused, 1, extended)
return refused
