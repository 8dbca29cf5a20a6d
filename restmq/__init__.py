"""RestMQ: an HTTP/JSON message broker that keeps all of its state in Redis."""

__version__ = "2.0.0.dev0"
