-- take.lua: pop (or lease) up to N messages for a REST consumer.
-- KEYS[1] = <q>:queue (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = N  ARGV[3] = lease ms (0: plain pop, the message is deleted)
-- ARGV[4] = lease token prefix  ARGV[5] = "1" if a stopped queue holds pops
-- ARGV[6] = default max_receives  ARGV[7] = listeners ttl ms (a long-poll waits: publishers
-- must notify, and must not bypass the list) or 0  ARGV[8] = "1" when the lease is the default one (the queue's own
-- lease_seconds setting wins then)  ARGV[9] = ms a plain pop leaves the body in place
-- (the original kept it; 0 = delete it at once)
-- Returns {stopped (0|1), key, body, deliveries, token, ...}.
local queue = ARGV[1]
if ARGV[7] ~= '0' then
  listen(queue, ARGV[7])
  mark(queue .. ':poppers', ARGV[7])
end
if ARGV[5] == '1' and is_stopped(queue) then
  return {1}
end
local now = now_ms()
promote(queue, now, tonumber(ARGV[6]))
local lease = tonumber(ARGV[3])
if lease > 0 and ARGV[8] == '1' then
  local own = tonumber(redis.call('HGET', queue .. ':settings', 'lease_seconds'))
  if own then
    lease = math.floor(own * 1000)
  end
end
local out = pop(queue, tonumber(ARGV[2]), lease, ARGV[4], now, tonumber(ARGV[9]) or 0)
table.insert(out, 1, 0)
return out
