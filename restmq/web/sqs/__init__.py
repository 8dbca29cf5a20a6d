"""Amazon SQS's API on RestMQ's queues: a second listener (``[sqs] port``) speaking
AWS JSON 1.0 and the query protocol, on the same store and dispatcher.

codec.py      the two wire protocols, to and from the JSON protocol's shapes
sigv4.py      Signature Version 4 verification (header and presigned forms)
attributes.py queue attributes <-> RestMQ settings, message validation, MD5 digests
actions.py    every action, once
handler.py    the Cyclone handler: protocol, browser refusal, signature, errors
app.py        make_sqs_app: the listener's Cyclone application
"""
