-- stats.lua: counts for one queue, or for one page of the queues in QUEUESET.
-- KEYS[1] = QUEUESET
-- ARGV[1] = queue name, or "" for a page of all queues  ARGV[2] = default max_receives
-- ARGV[3] = SSCAN cursor ("0" to begin)  ARGV[4] = queues per page (a hint to SSCAN)
-- QueueStore.stats calls it page after page, so that no call holds Redis for long
-- however many queues there are (SSCAN may repeat a name: the caller keeps one).
-- Due delayed messages and expired leases are moved first, so the counts are current.
-- Returns the next cursor ("0": that was the last page), then a flat list, 11 fields per
-- queue: name, length, status, policy ("" when unset), inflight, delayed, dead, age of the
-- oldest waiting message in ms (-1 unknown), its consumer groups as a JSON array of
-- [name, backlog, inflight, delayed, dead, age ms] ("[]" none), messages published so far
-- (<q>:UUID) and messages handed out so far (<q>:delivered plus each group's
-- <q>#<g>:delivered).
local names
local out
if ARGV[1] ~= '' then
  names = {ARGV[1]}
  out = {'0'}
else
  local page = redis.call('SSCAN', KEYS[1], ARGV[3], 'COUNT', ARGV[4])
  names = page[2]
  out = {page[1]}
end
local now = now_ms()
for _, q in ipairs(names) do
  promote(q, '', now, tonumber(ARGV[2]))
  local oldest = redis.call('LINDEX', q .. ':queue', -1)
  local age = -1
  if oldest then
    local at = tonumber(redis.call('HGET', q .. ':enqueued', oldest))
    if at then
      age = now - at
    end
  end
  out[#out + 1] = q
  out[#out + 1] = redis.call('LLEN', q .. ':queue') + (tonumber(redis.call('GET', q .. ':parked')) or 0)
  out[#out + 1] = redis.call('GET', 'queuestat::' .. q) or '1'
  out[#out + 1] = redis.call('GET', q .. ':queuepolicy') or ''
  out[#out + 1] = redis.call('ZCARD', q .. ':inflight')
  out[#out + 1] = redis.call('ZCARD', q .. ':delayed')
  out[#out + 1] = redis.call('LLEN', q .. ':dead:queue')
  out[#out + 1] = age
  local groups = {}
  local delivered = tonumber(redis.call('GET', q .. ':delivered')) or 0
  for _, g in ipairs(redis.call('HKEYS', q .. ':groups')) do
    promote(q, g, now, tonumber(ARGV[2]))
    local counts = group_counts(q, g, now)
    table.insert(counts, 1, g)
    groups[#groups + 1] = counts
    delivered = delivered + (tonumber(redis.call('GET', ns_of(q, g) .. ':delivered')) or 0)
  end
  out[#out + 1] = #groups > 0 and cjson.encode(groups) or '[]'
  out[#out + 1] = redis.call('GET', q .. ':UUID') or 0
  out[#out + 1] = delivered
end
return out
