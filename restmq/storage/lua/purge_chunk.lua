-- purge_chunk.lua: delete up to N message bodies of a purge in progress (purge_start.lua).
-- KEYS[1..3] = the purge's list, inflight and delayed keys  KEYS[4] = restmq:purges
-- ARGV[1] = queue name  ARGV[2] = N  ARGV[3] = the restmq:purges entry
-- Only keys of the queue ("<q>:<n>") are deleted; the entry leaves restmq:purges with
-- the last chunk. Returns {bodies deleted, 1 when the purge is complete else 0}.
local queue = ARGV[1]
local want = tonumber(ARGV[2])
local taken = {}
local list = redis.call('RPOP', KEYS[1], want)
if list then
  for _, key in ipairs(list) do
    taken[#taken + 1] = key
  end
end
for i = 2, 3 do
  if #taken < want then
    local popped = redis.call('ZPOPMIN', KEYS[i], want - #taken)
    for j = 1, #popped, 2 do
      taken[#taken + 1] = popped[j]
    end
  end
end
local mine = {}
for _, key in ipairs(taken) do
  if owns(queue, key) then
    mine[#mine + 1] = key
  end
end
local deleted = 0
for i = 1, #mine, 1000 do
  deleted = deleted + redis.call('UNLINK', unpack(mine, i, math.min(i + 999, #mine)))
end
if #taken < want then
  redis.call('SREM', KEYS[4], ARGV[3])
  return {deleted, 1}
end
return {deleted, 0}
