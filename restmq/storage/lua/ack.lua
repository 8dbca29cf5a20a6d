-- ack.lua: finish leased messages for good.
-- KEYS[1] = <ns>:inflight (the script also touches the other keys of <q> and <ns> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = consumer group or ""  ARGV[3..] = key, token, key, token ...
-- (from the receipts)
-- A receipt counts only while its token is the message's current lease token: a
-- lease that expired and went to another consumer is refused and left untouched.
-- The body goes once every holder (default consumers, groups) is done with it.
-- Returns {acked count, refused key, refused key, ...}.
local queue, group = ARGV[1], ARGV[2]
local leases = ns_of(queue, group) .. ':leases'
local acked = 0
local refused = {}
for i = 3, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i + 1]
  if owns(queue, key) and redis.call('HGET', leases, key) == token then
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', leases, key)
    finish(queue, group, key)
    acked = acked + 1
  else
    refused[#refused + 1] = key
  end
end
table.insert(refused, 1, acked)
return refused
