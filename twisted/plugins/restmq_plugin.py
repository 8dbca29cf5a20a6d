from twisted.application.service import ServiceMaker

restmq = ServiceMaker("RestMQ", "restmq.tap", "HTTP/JSON message broker on Redis", "restmq")
# the original's collectd plugin: the same broker (its /collectd/data and /collectd/event included)
collectd = ServiceMaker("RestMQ collectd", "restmq.tap", "RestMQ with its collectd endpoints", "collectd")
