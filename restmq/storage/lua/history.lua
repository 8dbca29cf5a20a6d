-- history.lua: the broadcast messages newer than a given key, for SSE resume.
-- KEYS[1] = <q>:history  KEYS[2] = <q>:historybodies  KEYS[3] = <q>:historymeta
-- ARGV[1] = the last key the client saw
-- Returns {found (0|1), key, body, metadata, ...} oldest first. When the key is not in the
-- history (too old, or unknown) found is 0 and the whole history follows.
local pos = redis.call('LPOS', KEYS[1], ARGV[1])
local keys
if pos then
  if pos == 0 then
    return {1}
  end
  keys = redis.call('LRANGE', KEYS[1], 0, pos - 1)
else
  keys = redis.call('LRANGE', KEYS[1], 0, -1)
end
local out = {pos and 1 or 0}
for i = #keys, 1, -1 do
  out[#out + 1] = keys[i]
  out[#out + 1] = redis.call('HGET', KEYS[2], keys[i]) or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], keys[i]) or ''
end
return out
