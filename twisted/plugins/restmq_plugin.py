from twisted.application.service import ServiceMaker

restmq = ServiceMaker("RestMQ", "restmq.tap", "HTTP/JSON message broker on Redis", "restmq")
