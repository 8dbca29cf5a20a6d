-- settings.lua: change a queue's settings in one step.
-- KEYS[1] = <q>:settings
-- ARGV = name, value, name, value ... (an empty value removes the setting)
-- Returns the number of fields set.
local set = 0
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    set = set + 1
  end
end
return set
