-- sqs_attributes.lua: what GetQueueAttributes reports, counts made current first.
-- KEYS[1] = <q>:sqs (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = default max_receives
-- Due delayed messages and expired leases are moved first (as stats.lua does).
-- Returns {<q>:sqs as name, value, ...}, {<q>:settings as name, value, ...}, waiting,
-- in flight, delayed} | error "NOQUEUE ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
promote(queue, '', now_ms(), tonumber(ARGV[2]))
-- messages waiting behind a held ordering key (FIFO group) are waiting too
local waiting = redis.call('LLEN', queue .. ':queue') + (tonumber(redis.call('GET', queue .. ':parked')) or 0)
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', queue .. ':settings'),
  waiting, redis.call('ZCARD', queue .. ':inflight'),
  redis.call('ZCARD', queue .. ':delayed')}
