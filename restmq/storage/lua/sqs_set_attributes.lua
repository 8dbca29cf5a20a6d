-- sqs_set_attributes.lua: change an SQS queue's attributes in one step (SetQueueAttributes).
-- KEYS[1] = <q>:sqs (the script also touches <q>:settings, SQSQUEUESET and the
-- <dlq>:sqssources sets of the old and new dead-letter targets)
-- ARGV[1] = queue name  ARGV[2] = now (seconds)  ARGV[3] = dead-letter target that must
-- exist ("" none)  then (hash "sqs"|"settings", field, value) triples; "" removes the field.
-- Returns 1 | error "NOQUEUE ..." | "NODLQ ..." | "DLQTYPE ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
local settings = queue .. ':settings'
local dlq = ARGV[3]
if dlq ~= '' then
  if not sqs_exists(dlq) then
    return redis.error_reply('NODLQ ' .. dlq)
  end
  if (redis.call('HGET', dlq .. ':sqs', 'FifoQueue') or 'false')
      ~= (redis.call('HGET', KEYS[1], 'FifoQueue') or 'false') then
    return redis.error_reply('DLQTYPE ' .. dlq)
  end
end
local hashes = {sqs = KEYS[1], settings = settings}
local before = redis.call('HGET', settings, 'dead_letter_queue')
for i = 4, #ARGV, 3 do
  if ARGV[i + 2] == '' then
    redis.call('HDEL', hashes[ARGV[i]], ARGV[i + 1])
  else
    redis.call('HSET', hashes[ARGV[i]], ARGV[i + 1], ARGV[i + 2])
  end
end
local after = redis.call('HGET', settings, 'dead_letter_queue')
if before and before ~= after then
  redis.call('SREM', before .. ':sqssources', queue)
end
if after then
  redis.call('SADD', after .. ':sqssources', queue)
end
redis.call('HSETNX', KEYS[1], 'CreatedTimestamp', ARGV[2])
redis.call('HSET', KEYS[1], 'LastModifiedTimestamp', ARGV[2])
redis.call('SADD', 'SQSQUEUESET', queue)
return 1
