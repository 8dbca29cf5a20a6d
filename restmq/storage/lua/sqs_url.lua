-- sqs_url.lua: does an SQS queue exist (GetQueueUrl)?
-- KEYS[1] = <q>:sqs (the script also reads QUEUESET)
-- ARGV[1] = queue name
-- Returns 1 or 0.
return sqs_exists(ARGV[1]) and 1 or 0
