-- browse.lua: the next messages to be delivered, oldest first, a page at a time, left in place.
-- KEYS[1] = <q>:queue (the script also reads <q>:deliveries, <q>:enqueued, <q>:deadinfo)
-- ARGV[1] = queue name  ARGV[2] = offset (0 = the next message to go)  ARGV[3] = how many
-- ARGV[4] = most bytes of each body to return
-- Returns {length, key, body prefix, size in bytes, deliveries, enqueued ms or false,
-- ttl ms left (-1 none, -2 gone: expired or foreign), dead-letter note or false, ...}.
local queue = ARGV[1]
local offset = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local most = tonumber(ARGV[4])
local length = redis.call('LLEN', KEYS[1])
local out = {length}
if count <= 0 or offset >= length then
  return out
end
-- the tail of the list goes first (consumers RPOP)
local keys = redis.call('LRANGE', KEYS[1], -(offset + count), -(offset + 1))
for i = #keys, 1, -1 do
  local key = keys[i]
  out[#out + 1] = key
  if owns(queue, key) then
    out[#out + 1] = redis.call('GETRANGE', key, 0, most - 1)
    out[#out + 1] = redis.call('STRLEN', key)
    out[#out + 1] = tonumber(redis.call('HGET', queue .. ':deliveries', key)) or 0
    out[#out + 1] = redis.call('HGET', queue .. ':enqueued', key)
    out[#out + 1] = redis.call('PTTL', key)
    out[#out + 1] = redis.call('HGET', queue .. ':deadinfo', key)
  else
    -- a foreign element: shown as gone (a pop drops it), never dereferenced
    out[#out + 1] = ''
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = false
    out[#out + 1] = -2
    out[#out + 1] = false
  end
end
return out
