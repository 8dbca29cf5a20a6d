-- sqs_settle.lua: DeleteMessage(Batch) and ChangeMessageVisibility(Batch) by receipt.
-- KEYS[1] = <q>:inflight (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = "delete" or "visibility"
-- then (key, token, visibility ms) per receipt (the ms is ignored by delete).
-- A receipt counts while its token is the message's current lease token. delete
-- finishes the message as an ack does (its ordering key passes to the next message);
-- visibility moves its lease deadline to now + ms (0: visible now).
-- Returns {1|0 per receipt} (0: not in flight under that receipt) | error "NOQUEUE ...".
local queue = ARGV[1]
if not sqs_exists(queue) then
  return no_queue(queue)
end
local leases = queue .. ':leases'
local delete = ARGV[2] == 'delete'
local now = now_ms()
local out = {}
local visible = false
for i = 3, #ARGV, 3 do
  local key, token = ARGV[i], ARGV[i + 1]
  if owns(queue, key) and redis.call('HGET', leases, key) == token then
    if delete then
      redis.call('ZREM', KEYS[1], key)
      redis.call('HDEL', leases, key)
      finish(queue, '', key)
    else
      local ms = tonumber(ARGV[i + 2])
      redis.call('ZADD', KEYS[1], 'XX', now + ms, key)
      visible = visible or ms == 0
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if (visible or delete) and redis.call('EXISTS', queue .. ':listeners') == 1 then
  -- a message made visible (or the next of its ordering key) wakes the long polls
  redis.call('PUBLISH', 'restmq:notify', 'w' .. queue)
end
return out
