"""twistd Options and makeService of ``restmq-syslogd``: wires the pieces, holds no logic.

Redis is chosen as RestMQ chooses it (``--redis``, ``--redis-host/--redis-port``,
``[redis]`` of ``--config``); with none configured it is the embedded Redis
of a RestMQ using the same ``--data-dir``, or one of its own there.
"""

from __future__ import annotations

from typing import Dict, Tuple

from twisted.application import service
from twisted.python import usage

from restmq.config import Config, load_config
from restmq.errors import ConfigError
from restmq.tap import CONFIG_STATUS, REDIS_PARAMETERS, Guarded, OneLineErrors, StartupError

__all__ = ["Options", "makeService", "DEFAULT_PORT", "DEFAULT_MAX_LINE"]

DEFAULT_PORT = 25000
DEFAULT_MAX_LINE = 64 * 1024

# command line flag -> (section, key) of restmq.conf; only Redis is shared with RestMQ
_FLAG_KEYS: Dict[str, Tuple[str, str]] = {
    "redis": ("redis", "url"),
    "redis-host": ("redis", "host"),
    "redis-port": ("redis", "port"),
    "redis-pool": ("redis", "pool_size"),
    "redis-db": ("redis", "db"),
    "data-dir": ("redis", "data_dir"),
}


def _positive(name: str, text: str, low: int = 1, high: int = 2 ** 31) -> int:
    try:
        value = int(text)
    except ValueError:
        raise usage.UsageError("--%s must be a whole number, not %r" % (name, text)) from None
    if not low <= value <= high:
        raise usage.UsageError("--%s must be between %d and %d" % (name, low, high))
    return value


class Options(OneLineErrors):
    program = "restmq-syslogd"
    synopsis = "[options]"
    longdesc = ("restmq-syslogd: receives syslog (RFC 3164 and 5424) over TCP and UDP and "
                "stores every line as a JSON message in the RestMQ queue syslogd:<sender>. "
                "With no Redis configured it uses the embedded Redis of a RestMQ running "
                "with the same --data-dir, or starts its own there.")
    optParameters = [
        ["port", "p", str(DEFAULT_PORT), "TCP and UDP port to listen on"],
        ["listen", "l", "127.0.0.1", "interface to listen on (0.0.0.0 or :: for every one)"],
        ["max-line", None, str(DEFAULT_MAX_LINE), "longest message in bytes; longer ones are "
                                                  "cut and flagged truncated"],
        ["max-connections", None, "1000", "most TCP senders at once"],
        ["max-pending", None, str(64 * 1024 * 1024), "bytes of messages held while Redis is slow "
                                                     "or away; past it TCP senders are paused "
                                                     "and UDP datagrams dropped"],
        ["config", "c", None, "RestMQ INI file; its [redis] section is used"],
        *REDIS_PARAMETERS,
        ["data-dir", None, None, "folder of the embedded Redis, shared with a RestMQ "
                                 "using the same one [as restmq's]"],
    ]
    optFlags = [
        ["no-tcp", None, "do not listen on TCP"],
        ["no-udp", None, "do not listen on UDP"],
    ]

    def postOptions(self) -> None:
        self["port"] = _positive("port", self["port"], 0, 65535)
        self["max-line"] = _positive("max-line", self["max-line"], 480, 16 * 1024 * 1024)
        self["max-connections"] = _positive("max-connections", self["max-connections"])
        self["max-pending"] = _positive("max-pending", self["max-pending"], 64 * 1024)
        if self["no-tcp"] and self["no-udp"]:
            raise usage.UsageError("--no-tcp and --no-udp leave nothing to listen on")
        overrides = {_FLAG_KEYS[flag]: str(value) for flag, value in self.items()
                     if flag in _FLAG_KEYS and value is not None}
        try:
            self.config: Config = load_config(self["config"], overrides)
        except ConfigError as exc:
            raise StartupError(exc.message, CONFIG_STATUS) from None


def makeService(options: Options) -> service.MultiService:
    """redis (only when none is configured), pool, syslogd: started in this order."""
    from twisted.internet import reactor

    from restmq.server.redisproc import EmbeddedRedis, EmbeddedRedisError
    from restmq.server.services import RedisService
    from restmq.storage.pool import RedisPool
    from restmq.storage.store import QueueStore
    from restmq.ingest.syslog import LocalRedis, SyslogIngest, SyslogService

    config: Config = options.config
    top = Guarded(EmbeddedRedisError, program="restmq-syslogd")
    target = config.redis.target
    if target is None:
        try:
            embedded = EmbeddedRedis(config.redis.data_dir, config.redis.server_binary)
        except ConfigError as exc:
            raise usage.UsageError(exc.message) from None
        local = LocalRedis(embedded)
        local.setServiceParent(top)
        target = local.target

    pool = RedisPool(target, config.redis.pool_size, config.redis.connect_timeout,
                     config.redis.reply_timeout, reactor)
    RedisService(pool).setServiceParent(top)
    store = QueueStore(pool, config.delivery.max_receives, config.redis.wait_replicas)
    ingest = SyslogIngest(store, reactor, max_pending_bytes=options["max-pending"],
                          batch_size=config.delivery.max_batch)
    SyslogService(ingest, reactor, options["port"], options["listen"], options["max-line"],
                  options["max-connections"], tcp=not options["no-tcp"],
                  udp=not options["no-udp"]).setServiceParent(top)
    return top
