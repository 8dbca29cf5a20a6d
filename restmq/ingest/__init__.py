"""Adapters that feed queues: syslog over TCP/UDP and collectd's write_http bodies."""
