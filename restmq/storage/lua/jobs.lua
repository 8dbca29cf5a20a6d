-- jobs.lua: the job view: the newest waiting messages with their bodies, and the length.
-- KEYS[1] = <q>:queue
-- ARGV[1] = how many
-- Returns {length, key, body, key, body, ...} (body false when expired).
local keys = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {redis.call('LLEN', KEYS[1])}
for _, key in ipairs(keys) do
  out[#out + 1] = key
  out[#out + 1] = redis.call('GET', key)
end
return out
