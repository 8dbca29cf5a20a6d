-- reply.lua: store the reply to a waiting request and wake its caller's process.
-- KEYS[1] = restmq:rpc:<id>
-- ARGV[1] = request id  ARGV[2] = the encoded reply  ARGV[3] = notify channel
-- Returns 1 when a caller waits for it, 0 when none does (timed out, answered, unknown).
if redis.call('GET', KEYS[1]) ~= '' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('PUBLISH', ARGV[3], 'r' .. ARGV[1])
return 1
