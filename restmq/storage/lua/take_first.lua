-- take_first.lua: priority take: pop (or lease) up to N messages from the first
-- non-empty of several queues, in the order given, then from the next ones.
-- KEYS[1] = <first q's ns>:queue (the script also touches the keys of every queue named)
-- ARGV[1] = N  ARGV[2] = lease ms (0: plain pop)  ARGV[3] = lease token prefix
-- ARGV[4] = "1" if a stopped queue holds pops  ARGV[5] = default max_receives
-- ARGV[6] = listeners ttl ms (a long-poll waits) or 0  ARGV[7] = "1" when the lease is the
-- default one  ARGV[8] = consumer group or ""  ARGV[9..] = queue names, highest priority first
-- Returns {key, body, deliveries, token, metadata, ...} (the queue is in each key);
-- error "NOGROUP ..." when a queue lacks the group.
local n, group = tonumber(ARGV[1]), ARGV[8]
local now = now_ms()
local out = {}
local got = 0
for i = 9, #ARGV do
  local queue = ARGV[i]
  if group ~= '' and redis.call('HEXISTS', queue .. ':groups', group) == 0 then
    return redis.error_reply('NOGROUP queue ' .. queue .. ' has no group ' .. group)
  end
  local ns = ns_of(queue, group)
  if ARGV[6] ~= '0' then
    listen(ns, ARGV[6])
    mark(ns .. ':poppers', ARGV[6])
  end
  if got < n and not (ARGV[4] == '1' and is_stopped(queue)) then
    promote(queue, group, now, tonumber(ARGV[5]))
    local lease = tonumber(ARGV[2])
    if lease > 0 and ARGV[7] == '1' then
      local own = tonumber(setting(queue, group, 'lease_seconds'))
      if own then
        lease = math.floor(own * 1000)
      end
    end
    local part = pop(queue, group, n - got, lease, ARGV[3] .. i .. '.', now)
    for j = 1, #part do
      out[#out + 1] = part[j]
    end
    got = got + #part / 5
  end
end
return out
