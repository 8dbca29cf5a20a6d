-- collect.lua: the caller takes the reply to its request.
-- KEYS[1] = restmq:rpc:<id>
-- ARGV[1] = "1" when the caller stops waiting (a later reply then finds no caller), "0"
-- to take a reply only if one came
-- Returns the encoded reply, or "" when none came.
local reply = redis.call('GET', KEYS[1]) or ''
if reply ~= '' or ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
end
return reply
