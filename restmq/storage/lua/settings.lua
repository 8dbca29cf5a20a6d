-- settings.lua: change a queue's settings in one step.
-- KEYS[1] = <q>:settings
-- ARGV = name, value, name, value ... (an empty value removes the setting)
-- Returns the settings after the change (HGETALL), so the caller needs no second trip.
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return redis.call('HGETALL', KEYS[1])
