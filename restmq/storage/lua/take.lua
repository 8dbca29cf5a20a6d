-- take.lua: pop (or lease) up to N messages for a REST consumer.
-- KEYS[1] = <ns>:queue (the script also touches the other keys of <q> and <ns> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = N  ARGV[3] = lease ms (0: plain pop, the message is deleted)
-- ARGV[4] = lease token prefix  ARGV[5] = "1" if a stopped queue holds pops
-- ARGV[6] = default max_receives  ARGV[7] = listeners ttl ms (a long-poll waits: publishers
-- must notify, and must not bypass the list) or 0  ARGV[8] = "1" when the lease is the default one (the queue's own
-- lease_seconds setting wins then)  ARGV[9] = consumer group or "" (the default consumers)
-- ARGV[10] = ms a plain pop leaves the body in place (the original kept it; 0 = delete it)
-- Returns {stopped (0|1), lease ms used (0 for a plain pop), key, body, deliveries, token,
-- metadata, ...}; error "NOGROUP ..." when the group does not exist.
local queue, group = ARGV[1], ARGV[9] or ''
if group ~= '' and redis.call('HEXISTS', queue .. ':groups', group) == 0 then
  return redis.error_reply('NOGROUP queue ' .. queue .. ' has no group ' .. group)
end
local ns = ns_of(queue, group)
if ARGV[7] ~= '0' then
  listen(ns, ARGV[7])
  mark(ns .. ':poppers', ARGV[7])
end
if ARGV[5] == '1' and is_stopped(queue) then
  return {1}
end
local now = now_ms()
promote(queue, group, now, tonumber(ARGV[6]))
local lease = tonumber(ARGV[3])
if lease > 0 and ARGV[8] == '1' then
  local own = tonumber(setting(queue, group, 'lease_seconds'))
  if own then
    lease = math.floor(own * 1000)
  end
end
local out = pop(queue, group, tonumber(ARGV[2]), lease, ARGV[4], now, tonumber(ARGV[10]) or 0)
table.insert(out, 1, lease)
table.insert(out, 1, 0)
return out
