-- purge_start.lua: empty a queue at once, in O(1): its list and lease/delay sets are
-- renamed aside and its bookkeeping hashes unlinked (freed by Redis in the background);
-- purge_chunk.lua then deletes the message bodies a bounded chunk per call.
-- KEYS[1] = <q>:queue  KEYS[2] = QUEUESET  KEYS[3] = restmq:purges
-- KEYS[4..6] = the purge's list, inflight and delayed keys (keys.purge_trash)
-- ARGV[1] = queue name  ARGV[2] = notify channel  ARGV[3] = the restmq:purges entry
-- Policy, status and settings are configuration and stay; the id counter stays so keys
-- are never reused. Tells every process to close the queue's streams.
-- Returns how many message keys wait to be deleted.
local queue = ARGV[1]
local pending = 0
local moves = {{KEYS[1], KEYS[4], 'LLEN'}, {queue .. ':inflight', KEYS[5], 'ZCARD'},
  {queue .. ':delayed', KEYS[6], 'ZCARD'}}
for _, move in ipairs(moves) do
  if redis.call('EXISTS', move[1]) == 1 then
    pending = pending + redis.call(move[3], move[1])
    redis.call('RENAME', move[1], move[2])
  end
end
redis.call('UNLINK', queue .. ':leases', queue .. ':deliveries', queue .. ':history',
  queue .. ':historybodies', queue .. ':enqueued', queue .. ':deadinfo')
redis.call('SREM', KEYS[2], queue)
if pending > 0 then
  redis.call('SADD', KEYS[3], ARGV[3])
end
redis.call('PUBLISH', ARGV[2], 'p' .. queue)
return pending
