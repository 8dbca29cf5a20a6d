-- sqs_purge.lua: PurgeQueue (and DeleteQueue's first part) in bounded steps.
-- KEYS[1] = <q>:queue (the script also touches the other keys of <q> named in keys.py)
-- ARGV[1] = queue name  ARGV[2] = most messages removed by this call
-- ARGV[3] = "1" to purge even when the queue no longer exists (DeleteQueue's leftovers)
-- The caller repeats while more are left: no call holds Redis long. The queue, its
-- settings and its streaming consumers stay (SQS's purge removes messages only).
-- Returns {removed, more (0|1)} | error "NOQUEUE ...".
local queue = ARGV[1]
if ARGV[3] ~= '1' and not sqs_exists(queue) then
  return no_queue(queue)
end
local removed, more = sqs_purge_some(queue, tonumber(ARGV[2]))
return {removed, more}
