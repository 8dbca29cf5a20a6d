-- status.lua: start or stop a queue's consumers; a start wakes its streams everywhere.
-- KEYS[1] = queuestat::<q>  KEYS[2] = <q>:listeners
-- ARGV[1] = "1" start or "0" stop  ARGV[2] = queue name  ARGV[3] = notify channel
-- Returns the new state.
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[3], 'w' .. ARGV[2])
end
return tonumber(ARGV[1])
