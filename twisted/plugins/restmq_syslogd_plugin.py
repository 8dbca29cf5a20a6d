from twisted.application.service import ServiceMaker

restmq_syslogd = ServiceMaker("RestMQ syslogd", "restmq.ingest.syslogtap",
                              "syslog over TCP and UDP into RestMQ queues", "restmq-syslogd")
# the original's name for it (its start scripts ran "twistd syslogd")
syslogd = ServiceMaker("RestMQ syslogd", "restmq.ingest.syslogtap",
                       "syslog over TCP and UDP into RestMQ queues", "syslogd")
