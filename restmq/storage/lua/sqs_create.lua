-- sqs_create.lua: create an SQS queue, or confirm an existing one (CreateQueue).
-- KEYS[1] = <q>:sqs (the script also touches <q>:settings, <q>:sqstags, SQSQUEUESET,
-- QUEUESET, queuestat::<q>, and the <dlq>:sqssources of a RedrivePolicy's target)
-- ARGV[1] = queue name  ARGV[2] = now (seconds)  ARGV[3] = n attributes
-- ARGV[4] = dead-letter target that must exist ("" none)  ARGV[5] = "true" if the queue is FIFO
-- then n groups of (hash "sqs"|"settings", field, value, given "1"|"0") and tag key, value pairs.
-- An existing SQS queue is confirmed when every given attribute has the same value, else
-- the reply is {0, field}. A new queue (or one RestMQ knew but SQS did not) gets the
-- given attributes and, where it has none of its own, the defaults.
-- Returns {1, created (0|1)} | {0, differing field} | error "NODLQ ..." | error "DLQTYPE ...".
local queue = ARGV[1]
local n = tonumber(ARGV[3])
local hashes = {sqs = KEYS[1], settings = queue .. ':settings'}
local first_tag = 6 + 4 * n
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 6, first_tag - 1, 4 do
    if ARGV[i + 3] == '1' and (redis.call('HGET', hashes[ARGV[i]], ARGV[i + 1]) or '') ~= ARGV[i + 2] then
      return {0, ARGV[i + 1]}
    end
  end
  return {1, 0}
end
local dlq = ARGV[4]
if dlq ~= '' then
  if not sqs_exists(dlq) then
    return redis.error_reply('NODLQ ' .. dlq)
  end
  if (redis.call('HGET', dlq .. ':sqs', 'FifoQueue') or 'false') ~= (ARGV[5] == 'true' and 'true' or 'false') then
    return redis.error_reply('DLQTYPE ' .. dlq)
  end
end
for i = 6, first_tag - 1, 4 do
  if ARGV[i + 3] == '1' then
    redis.call('HSET', hashes[ARGV[i]], ARGV[i + 1], ARGV[i + 2])
  else
    redis.call('HSETNX', hashes[ARGV[i]], ARGV[i + 1], ARGV[i + 2])
  end
end
redis.call('HSET', KEYS[1], 'CreatedTimestamp', ARGV[2], 'LastModifiedTimestamp', ARGV[2])
for i = first_tag, #ARGV, 2 do
  redis.call('HSET', queue .. ':sqstags', ARGV[i], ARGV[i + 1])
end
local target = redis.call('HGET', hashes.settings, 'dead_letter_queue')
if target then
  redis.call('SADD', target .. ':sqssources', queue)
end
redis.call('SADD', 'SQSQUEUESET', queue)
if redis.call('SADD', 'QUEUESET', queue) == 1 then
  redis.call('SET', 'queuestat::' .. queue, '1', 'NX')
end
return {1, 1}
