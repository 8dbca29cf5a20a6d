-- sqs_tags.lua: TagQueue, UntagQueue, ListQueueTags.
-- KEYS[1] = <q>:sqstags (the script also reads <q>:sqs and QUEUESET)
-- ARGV[1] = queue name  ARGV[2] = "tag" | "untag" | "list"  ARGV[3] = most tags a queue
-- may have  then key, value pairs (tag) or keys (untag).
-- Returns the tags after the change (HGETALL) | error "NOQUEUE ..." | error "TAGLIMIT ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
if ARGV[2] == 'tag' and #ARGV > 3 then
  local added = 0
  for i = 4, #ARGV, 2 do
    added = added + (1 - redis.call('HEXISTS', KEYS[1], ARGV[i]))
  end
  if redis.call('HLEN', KEYS[1]) + added > tonumber(ARGV[3]) then
    return redis.error_reply('TAGLIMIT a queue has at most ' .. ARGV[3] .. ' tags')
  end
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
elseif ARGV[2] == 'untag' and #ARGV > 3 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 4))
end
return redis.call('HGETALL', KEYS[1])
