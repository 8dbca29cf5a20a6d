-- group_check.lua: do these queues all have consumer group g?
-- KEYS[1] = <first q>:groups (the script also reads <q>:groups of every queue named)
-- ARGV[1] = group name  ARGV[2..] = queue names
-- Returns "" when they all do, else the first queue that does not.
for i = 2, #ARGV do
  if redis.call('HEXISTS', ARGV[i] .. ':groups', ARGV[1]) == 0 then
    return ARGV[i]
  end
end
return ''
