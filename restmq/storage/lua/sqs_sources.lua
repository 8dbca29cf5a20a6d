-- sqs_sources.lua: ListDeadLetterSourceQueues: the queues whose dead letters go to <q>.
-- KEYS[1] = <q>:sqssources (the script also reads <q>:sqs, QUEUESET and the settings of
-- the queue "<base>" when <q> is "<base>:dead", RestMQ's own dead-letter queue)
-- ARGV[1] = queue name
-- Returns the source queue names (unsorted) | error "NOQUEUE ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
local sources = redis.call('SMEMBERS', KEYS[1])
local base = string.match(queue, '^(.+):dead$')
if base and sqs_exists(base) and not redis.call('HGET', base .. ':settings', 'dead_letter_queue') then
  sources[#sources + 1] = base
end
return sources
