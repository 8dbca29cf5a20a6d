"""twistd Options and makeService: wires the pieces, holds no logic."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Dict, Optional, Sequence, Tuple, Type

from twisted.application import internet, service
from twisted.internet import defer
from twisted.python import usage

from twisted.logger import Logger

from restmq.config import Config, load_config
from restmq.errors import ConfigError

__all__ = ["Options", "makeService", "StartupError", "OneLineErrors", "CYCLONE_INSTALL",
           "USAGE_STATUS", "CONFIG_STATUS"]

#: exit status of a bad command line, and of a bad configuration or installation
USAGE_STATUS = 2
CONFIG_STATUS = 1
#: how pip users add cyclone (its own pins cannot be installed, see setup.cfg)
CYCLONE_INSTALL = "pip install --no-deps cyclone==1.3"

# command line flag -> (section, key) of restmq.conf
_FLAG_KEYS: Dict[str, Tuple[str, str]] = {
    "port": ("server", "port"),
    "listen": ("server", "listen"),
    "redis": ("redis", "url"),
    "redis-host": ("redis", "host"),
    "redis-port": ("redis", "port"),
    "redis-pool": ("redis", "pool_size"),
    "redis-db": ("redis", "db"),
    "redis-wait": ("redis", "wait_replicas"),
    "acl": ("acl", "file"),
    "data-dir": ("redis", "data_dir"),
    "sqs-port": ("sqs", "port"),
    "sqs-listen": ("sqs", "listen"),
    "sqs-credentials": ("sqs", "credentials"),
}


#: the Redis options both plugins (restmq, restmq-syslogd) take
REDIS_PARAMETERS = [
    ["redis", None, None, "redis://[:password@]host:port/db, unix:///path?db=N "
                          "or sentinel://host:port[,host:port]/master"],
    ["redis-host", None, None, "Redis host (the original's flag)"],
    ["redis-port", None, None, "Redis port [6379]"],
    ["redis-pool", None, None, "Redis connection pool size [10]"],
    ["redis-db", None, None, "Redis database number [0]"],
]


class StartupError(usage.UsageError):
    """A usage error that knows its exit status: USAGE_STATUS (2) for the command
    line, CONFIG_STATUS (1) for a configuration file or the installation."""

    def __init__(self, message: str, status: int = USAGE_STATUS) -> None:
        super().__init__(message)
        self.status = status


class OneLineErrors(usage.Options):
    """Under twistd, a bad option or configuration ends the process with one line on
    standard error and an exit status, instead of twistd's whole usage text on
    standard output. Parsed by anything else (tests, the workers launcher), the
    ``usage.UsageError`` (a :class:`StartupError`) is raised as usual."""

    program = "restmq"

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as exc:
            if self.parent is None:
                raise
            status = exc.status if isinstance(exc, StartupError) else USAGE_STATUS
            sys.stderr.write("%s: %s\n" % (self.program, exc))
            sys.stderr.flush()
            raise SystemExit(status) from None


def _check_cyclone() -> None:
    # find_spec, not import: importing cyclone here could install a reactor
    # before twistd installs the one it was asked for
    if importlib.util.find_spec("cyclone") is None:
        raise StartupError("cyclone is not installed; install it with: %s" % CYCLONE_INSTALL,
                           CONFIG_STATUS)


class Options(OneLineErrors):
    synopsis = "[options]"
    longdesc = ("RestMQ: an HTTP/JSON message broker on Redis. With no Redis configured "
                "it starts its own redis-server in --data-dir.")
    optParameters = [
        ["config", "c", None, "INI configuration file (see etc/restmq.conf)"],
        ["port", "p", None, "TCP port to listen on [8888]"],
        ["listen", "l", None, "interface to listen on [127.0.0.1]"],
        *REDIS_PARAMETERS,
        ["redis-wait", None, None, "acknowledge a publish once N replicas have it (WAIT)"],
        ["acl", None, None, "ACL file (sections rest:producer, rest:consumer, ...)"],
        ["data-dir", None, None, "where the embedded redis-server keeps its files [var/redis in "
                                 "a checkout, /var/lib/restmq/redis for root, else "
                                 "~/.local/share/restmq/redis]"],
        ["sqs-port", None, None, "port of the Amazon SQS-compatible API (0 = off) [0]"],
        ["sqs-listen", None, None, "interface of the SQS API [127.0.0.1]"],
        ["sqs-credentials", None, None, "SQS access keys file (see etc/sqs-credentials.conf)"],
    ]
    optFlags = [
        ["access-log", None, "log one line per request"],
        ["json-log", None, "log JSON lines on standard output (twistd --logger restmq.logs.json_observer)"],
        ["reuse-port", None, "listen with SO_REUSEPORT so several processes share the port"],
    ]

    def postOptions(self) -> None:
        overrides = {_FLAG_KEYS[flag]: str(value) for flag, value in self.items()
                     if flag in _FLAG_KEYS and value is not None}
        if self["access-log"]:
            overrides[("server", "access_log")] = "true"
        if self["reuse-port"]:
            overrides[("server", "reuse_port")] = "true"
        if self["json-log"]:
            overrides[("server", "json_log")] = "true"
        _check_cyclone()
        try:
            # the command line alone first: what is wrong there is a usage error (2)
            load_config(None, overrides)
        except ConfigError as exc:
            raise StartupError(exc.message, USAGE_STATUS) from None
        try:
            self.config: Config = load_config(self["config"], overrides)
            if self.config.acl_file:
                from restmq.acl import load_acl
                load_acl(self.config.acl_file)
            if self.config.sqs.port:
                _check_sqs_access(self.config)
            if self.config.redis.target is None:
                from restmq.server.redisproc import EmbeddedRedis
                EmbeddedRedis(self.config.redis.data_dir, self.config.redis.server_binary)
        except ConfigError as exc:
            raise StartupError(exc.message, CONFIG_STATUS) from None
        self._choose_logger()
        self._choose_pidfile()

    def _choose_logger(self) -> None:
        """With json_log, tell twistd (our parent Options, which starts logging
        before any service runs) to use the JSON observer, unless --logger was given."""
        parent = self.parent
        if self.config.server.json_log and parent is not None and "logger" in parent \
                and parent["logger"] is None:
            parent["logger"] = "restmq.logs.json_observer"

    def _choose_pidfile(self) -> None:
        """In the foreground (``twistd -n``) with twistd's default ``--pidfile``
        (``twistd.pid`` in the current folder), write none: whatever runs RestMQ in
        the foreground (a terminal, systemd, the workers launcher) knows its pid. A
        daemon (no ``-n``) keeps its pidfile, as twistd decides."""
        parent = self.parent
        if parent is not None and "pidfile" in parent and parent.get("nodaemon") \
                and parent["pidfile"] == "twistd.pid":
            parent["pidfile"] = ""


def _check_sqs_access(config: Config) -> None:
    """The SQS listener must not open what the REST ACL closes: where REST needs
    credentials, the SQS API needs its own (signed) access keys.

    :raises ConfigError: naming what to set.
    """
    from restmq.acl import load_acl, load_sqs_credentials
    if config.sqs.credentials:
        load_sqs_credentials(config.sqs.credentials)
        return
    if not config.acl_file:
        return
    acl = load_acl(config.acl_file)
    for category in ("rest:producer", "rest:consumer"):
        rule = acl.rules.get(category)
        if rule is not None and rule.needs_credentials:
            raise ConfigError("%s: [%s] needs credentials, so the SQS API (port %d) needs its own: "
                              "set [sqs] credentials (see etc/sqs-credentials.conf)"
                              % (config.acl_file, category, config.sqs.port))


def makeService(options: Options) -> service.MultiService:
    """redis (embedded only), pool, dispatcher, http, sqs (when [sqs] port is set):
    started in this order."""
    from twisted.internet import reactor

    from restmq.acl import Acl, load_acl
    from restmq.dispatch import Dispatcher
    from restmq.metrics import Metrics
    from restmq.server.redisproc import EmbeddedRedis, EmbeddedRedisError
    from restmq.server.services import DispatcherService, RedisService, stop_and_exit
    from restmq.storage.notify import Notifier
    from restmq.storage.pool import RedisPool
    from restmq.storage.store import QueueStore
    from restmq.web.app import make_app
    from restmq.web.base import Context

    config: Config = options.config
    top = Guarded(EmbeddedRedisError)
    target = config.redis.target
    data_dir: Optional[str] = None
    embedded = None
    if target is None:
        try:
            embedded = EmbeddedRedis(config.redis.data_dir, config.redis.server_binary,
                                     max_restarts=config.redis.max_restarts, give_up=stop_and_exit,
                                     clock=reactor)
        except ConfigError as exc:  # postOptions checked it already; the same one line
            sys.stderr.write("restmq: %s\n" % exc.message)
            raise SystemExit(CONFIG_STATUS) from None
        embedded.setServiceParent(top)
        target = embedded.target
        data_dir = embedded.data_dir

    pool = RedisPool(target, config.redis.pool_size, config.redis.connect_timeout,
                     config.redis.reply_timeout, reactor)
    RedisService(pool).setServiceParent(top)
    metrics = Metrics(config.server.metrics_max_queues)
    store = QueueStore(pool, config.delivery.max_receives, config.redis.wait_replicas,
                       history_size=config.dispatch.history_size, observe=metrics.observe_redis)
    dispatcher = Dispatcher(store, reactor, config.dispatch, metrics=metrics,
                            lease_seconds=config.delivery.lease_seconds)
    notifier = Notifier(target, config.redis.connect_timeout, dispatcher.wake,
                        dispatcher.close_queue, dispatcher.on_broadcast, dispatcher.reconnected,
                        on_reply=dispatcher.replied, origin=dispatcher.origin)
    DispatcherService(dispatcher, notifier).setServiceParent(top)

    acl = load_acl(config.acl_file) if config.acl_file else Acl()
    context = Context(store=store, dispatcher=dispatcher, acl=acl, config=config, clock=reactor,
                      metrics=metrics, embedded=embedded)
    http = _listener("http", config.server.port, make_app(context), config.server.listen,
                     config.server.reuse_port, top)
    if config.sqs.port:
        from restmq.acl import SqsKeys, load_sqs_credentials
        from restmq.web.sqs.app import make_sqs_app
        keys = load_sqs_credentials(config.sqs.credentials) if config.sqs.credentials else SqsKeys()
        _listener("sqs", config.sqs.port, make_sqs_app(context, keys), config.sqs.listen,
                  config.server.reuse_port, top)
    Banner(http, config, data_dir).setServiceParent(top)
    return top


def _listener(name: str, port: int, factory: Any, interface: str, reuse_port: bool,
              parent: service.MultiService) -> Any:
    """A TCP listener service named ``name`` (SO_REUSEPORT with ``reuse_port``)."""
    listener: Any
    if reuse_port:
        from restmq.server.reuseport import ReusePortServer
        listener = ReusePortServer(port, factory, interface)
    else:
        listener = internet.TCPServer(port, factory, interface=interface)
    listener.setName(name)
    listener.setServiceParent(parent)
    return listener


class Banner(service.Service):
    """Once listening, one line saying where RestMQ answers and where its data is."""

    log = Logger()
    name = "banner"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, http: Any, config: Config, data_dir: Optional[str]) -> None:
        self.http = http
        self.config = config
        self.data_dir = data_dir

    def startService(self) -> None:
        service.Service.startService(self)
        port = self.config.server.port
        # the port the kernel chose for port 0: TCPServer's _port, ReusePortServer's getHost
        listening = getattr(self.http, "_port", None) or getattr(self.http, "_listening", None)
        if listening is not None:
            port = listening.getHost().port
        host = self.config.server.listen or "0.0.0.0"
        url = "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)
        target = self.config.redis.target
        data = self.data_dir or (target.describe() if target is not None else "")
        self.log.info("RestMQ on {url} \N{EM DASH} dashboard {url}/dashboard/, data in {data}",
                      url=url, data=data)


class Guarded(service.MultiService):
    """The top service of a twistd plugin: a startup failure of a child becomes one
    clear line (prefixed with ``program``) and exit status 1, and the children stop
    one after the other (MultiService stops them all at once), so listeners drain
    before the pool, and the pool before the embedded Redis."""

    def __init__(self, *fatal: Type[BaseException], program: str = "restmq") -> None:
        super().__init__()
        self.fatal = fatal
        self.program = program

    def privilegedStartService(self) -> None:
        from twisted.internet.error import CannotListenError
        try:
            super().privilegedStartService()
        except CannotListenError as exc:
            sys.stderr.write("%s: cannot listen on %s:%s: %s\n"
                             % (self.program, exc.interface or "*", exc.port, exc.socketError))
            raise SystemExit(1)

    def startService(self) -> None:
        try:
            super().startService()
        except self.fatal as exc:
            sys.stderr.write("%s: %s\n" % (self.program, exc))
            self._stop_started()
            raise SystemExit(1)

    async def _stop_in_order(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                await defer.maybeDeferred(child.stopService)

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop_in_order())

    def _stop_started(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                child.stopService()
