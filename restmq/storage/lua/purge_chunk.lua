-- purge_chunk.lua: take up to N message keys from the set-aside keys of a purge in
-- progress (purge_start.lua) and delete their bodies.
-- KEYS[1] = the purge's job list  KEYS[2] = restmq:purges
-- ARGV[1] = queue name  ARGV[2] = N  ARGV[3] = the restmq:purges entry
-- Only keys of the queue ("<q>:<n>") are deleted, with their look counters ("<key>:refcount");
-- a body shared by several groups is deleted, and counted, once; the entry leaves
-- restmq:purges with the last chunk.
-- Returns {bodies deleted, 1 when the purge is complete else 0}.
local queue = ARGV[1]
local budget = tonumber(ARGV[2])
local deleted = 0
while budget > 0 do
  local aside = redis.call('LINDEX', KEYS[1], -1)
  if not aside then
    redis.call('SREM', KEYS[2], ARGV[3])
    return {deleted, 1}
  end
  local taken = {}
  local kind = redis.call('TYPE', aside)['ok']
  if kind == 'list' then
    taken = redis.call('RPOP', aside, budget) or {}
  elseif kind == 'zset' then
    local popped = redis.call('ZPOPMIN', aside, budget)
    for i = 1, #popped, 2 do
      taken[#taken + 1] = popped[i]
    end
  end
  if #taken < budget then
    -- that key is empty now (gone); on to the next one
    redis.call('RPOP', KEYS[1])
    redis.call('UNLINK', aside)
  end
  budget = budget - math.max(#taken, 1)
  local mine = {}
  for _, key in ipairs(taken) do
    if owns(queue, key) then
      mine[#mine + 1] = key
    end
  end
  if #mine > 0 then
    deleted = deleted + redis.call('UNLINK', unpack(mine))
    redis.call('UNLINK', unpack(refcounts(mine)))
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
  return {deleted, 1}
end
return {deleted, 0}
