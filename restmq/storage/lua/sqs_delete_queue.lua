-- sqs_delete_queue.lua: DeleteQueue: forget the queue, its configuration and (up to
-- ARGV[2] of) its messages; the caller purges what is left with sqs_purge.lua.
-- KEYS[1] = <q>:sqs (the script also touches every key of <q> named in keys.py,
-- QUEUESET, SQSQUEUESET, and the <dlq>:sqssources of its dead-letter target)
-- ARGV[1] = queue name  ARGV[2] = most messages removed by this call  ARGV[3] = notify channel
-- Every process closes the queue's streaming consumers. The id counter stays so
-- message keys (and SQS message ids) are never reused.
-- Returns {removed, more (0|1)} | error "NOQUEUE ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
local target = redis.call('HGET', queue .. ':settings', 'dead_letter_queue')
if target then
  redis.call('SREM', target .. ':sqssources', queue)
end
redis.call('DEL', KEYS[1], queue .. ':sqstags', queue .. ':settings', queue .. ':queuepolicy',
  'queuestat::' .. queue, queue .. ':idempotency', queue .. ':idempotencyexp', queue .. ':deadinfo')
redis.call('SREM', 'SQSQUEUESET', queue)
redis.call('SREM', 'QUEUESET', queue)
local removed, more = sqs_purge_some(queue, tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], 'p' .. queue)
return {removed, more}
