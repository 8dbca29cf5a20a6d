-- jobs.lua: the job view: the newest waiting messages with their bodies, and the length.
-- KEYS[1] = <ns>:queue
-- ARGV[1] = how many  ARGV[2] = a HASH of notes per message key (<q>:deadinfo), or ""
-- ARGV[3] = the HASH of message metadata (<q>:meta) or ""
-- Returns {length, key, body, note, metadata, ...} (body false when expired,
-- note and metadata false when there is none).
local keys = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {redis.call('LLEN', KEYS[1])}
for _, key in ipairs(keys) do
  out[#out + 1] = key
  out[#out + 1] = redis.call('GET', key)
  out[#out + 1] = ARGV[2] ~= '' and redis.call('HGET', ARGV[2], key)
  out[#out + 1] = (ARGV[3] or '') ~= '' and redis.call('HGET', ARGV[3], key)
end
return out
