from twisted.application.service import ServiceMaker

restmq_syslogd = ServiceMaker("RestMQ syslogd", "restmq.ingest.syslogtap",
                              "syslog over TCP and UDP into RestMQ queues", "restmq-syslogd")
