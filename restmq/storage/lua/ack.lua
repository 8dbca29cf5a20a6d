-- ack.lua: finish leased messages for good.
-- KEYS[1] = <q>:inflight (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2..] = key, token, key, token ... (from the receipts)
-- A receipt counts only while its token is the message's current lease token: a
-- lease that expired and went to another consumer is refused and left untouched.
-- Returns {acked count, refused key, refused key, ...}.
local queue = ARGV[1]
local leases = queue .. ':leases'
local acked = 0
local refused = {}
for i = 2, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i + 1]
  if owns(queue, key) and redis.call('HGET', leases, key) == token then
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', leases, key)
    redis.call('DEL', key, key .. ':refcount')
    redis.call('HDEL', queue .. ':deliveries', key)
    redis.call('HDEL', queue .. ':enqueued', key)
    acked = acked + 1
  else
    refused[#refused + 1] = key
  end
end
table.insert(refused, 1, acked)
return refused
