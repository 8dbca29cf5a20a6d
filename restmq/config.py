"""Configuration: built-in defaults < etc/restmq.conf (INI) < command line.

``load_config`` is pure: it parses, converts and validates, and raises
``ConfigError`` naming the file, section and key. Nothing re-reads the file
after startup.
"""

from __future__ import annotations

import configparser
import os
import urllib.parse
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attr

from restmq.errors import ConfigError

__all__ = [
    "Config", "ServerConfig", "RedisConfig", "RedisTarget", "DispatchConfig",
    "DeliveryConfig", "CollectdConfig", "COLLECTD_FORMATS", "SqsConfig", "load_config",
    "parse_redis_url", "OPTION_TABLE", "default_data_dir", "checkout_root", "read_ini",
]

MiB = 1024 * 1024


@attr.s(frozen=True, auto_attribs=True)
class ServerConfig:
    port: int = 8888
    listen: str = "127.0.0.1"
    max_message_bytes: int = 10 * MiB
    max_request_bytes: int = 32 * MiB
    max_header_bytes: int = 64 * 1024
    request_timeout: float = 30.0
    idle_timeout: float = 120.0
    access_log: bool = False
    json_log: bool = False
    xheaders: bool = False
    reuse_port: bool = False
    allowed_origins: Tuple[str, ...] = ()
    allowed_hosts: Tuple[str, ...] = ()
    max_output_bytes: int = 1 * MiB
    max_connections: int = 0
    max_connections_per_ip: int = 0
    header_timeout: float = 10.0
    metrics_max_queues: int = 200


@attr.s(frozen=True, auto_attribs=True)
class RedisTarget:
    """Where Redis is: TCP host/port, a unix socket, or Sentinel addresses."""

    kind: str = "tcp"  # "tcp", "unix" or "sentinel"
    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""
    db: int = 0
    password: Optional[str] = None
    sentinels: Tuple[Tuple[str, int], ...] = ()
    master_name: str = ""

    def describe(self) -> str:
        """The address without the password, for logs and /stats."""
        if self.kind == "unix":
            return "unix://%s?db=%d" % (self.path, self.db)
        if self.kind == "sentinel":
            hosts = ",".join("%s:%d" % hp for hp in self.sentinels)
            return "sentinel://%s/%s" % (hosts, self.master_name)
        return "redis://%s:%d/%d" % (self.host, self.port, self.db)


@attr.s(frozen=True, auto_attribs=True)
class RedisConfig:
    target: Optional[RedisTarget] = None  # None: the embedded redis-server
    db: int = 0
    pool_size: int = 10
    connect_timeout: float = 1.0
    reply_timeout: float = 1.5
    wait_replicas: int = 0
    data_dir: str = ""  # load_config fills in default_data_dir()
    server_binary: str = ""
    max_restarts: int = 5

    @property
    def embedded(self) -> bool:
        return self.target is None


@attr.s(frozen=True, auto_attribs=True)
class DispatchConfig:
    sweep_interval: float = 1.0
    buffer_limit: int = 1 * MiB
    heartbeat_interval: float = 15.0
    sse_retry_ms: int = 3000
    history_size: int = 1000
    max_wait: float = 60.0
    batch_size: int = 500
    max_stream_queues: int = 64


@attr.s(frozen=True, auto_attribs=True)
class DeliveryConfig:
    lease_seconds: float = 30.0
    max_receives: int = 5
    max_delay: float = 7 * 24 * 3600.0
    idempotency_window: float = 300.0
    stop_holds_pops: bool = False
    prefetch: int = 10
    max_batch: int = 1000
    max_attributes: int = 32
    max_attribute_bytes: int = 8192
    max_rpc_timeout: float = 300.0
    # seconds a REST pop leaves the body at its key "<q>:<n>" (the original left it)
    popped_ttl: float = 30.0


#: how /collectd/data and /collectd/event store what they get
COLLECTD_FORMATS = ("original", "parsed")


@attr.s(frozen=True, auto_attribs=True)
class CollectdConfig:
    # "original": one message per request, in the original RestMQ's shape;
    # "parsed": one JSON message per value list or notification
    format: str = "original"


@attr.s(frozen=True, auto_attribs=True)
class SqsConfig:
    """The Amazon SQS-compatible listener (restmq/web/sqs); port 0 = off."""

    port: int = 0
    listen: str = "127.0.0.1"
    account_id: str = "000000000000"
    region: str = "us-east-1"
    credentials: str = ""
    base_url: str = ""
    allowed_hosts: Tuple[str, ...] = ()
    max_message_bytes: int = 256 * 1024
    max_inflight: int = 120000
    signature_max_age: float = 900.0


@attr.s(frozen=True, auto_attribs=True)
class Config:
    server: ServerConfig = ServerConfig()
    redis: RedisConfig = RedisConfig()
    dispatch: DispatchConfig = DispatchConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    collectd: CollectdConfig = CollectdConfig()
    sqs: SqsConfig = SqsConfig()
    acl_file: str = ""
    source: str = "<defaults>"


def checkout_root() -> Optional[str]:
    """The folder of the source checkout this ``restmq`` package runs from (it holds
    ``setup.cfg`` and the twistd plugin), or None for an installed package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    marks = (os.path.join(root, "setup.cfg"), os.path.join(root, "twisted", "plugins", "restmq_plugin.py"))
    return root if all(os.path.isfile(mark) for mark in marks) else None


def default_data_dir(environ: Optional[Mapping[str, str]] = None, uid: Optional[int] = None,
                     checkout: Optional[str] = "") -> str:
    """Where the embedded Redis keeps its files when ``data_dir`` is not given:
    ``var/redis`` of a source checkout; ``/var/lib/restmq/redis`` for root;
    ``$XDG_DATA_HOME/restmq/redis`` (``~/.local/share/restmq/redis``) for anyone else.

    :param checkout: the checkout folder ("" = look it up, None = an installed package).
    """
    environ = os.environ if environ is None else environ
    if checkout == "":
        checkout = checkout_root()
    if checkout:
        return os.path.join(checkout, "var", "redis")
    if (os.geteuid() if uid is None else uid) == 0:
        return "/var/lib/restmq/redis"
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "restmq", "redis")


def _integer(text: str, problem: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(problem) from None


def _positive_int(text: str) -> int:
    value = _integer(text, "must be a positive integer")
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text, "must be zero or a positive integer")
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _port(text: str) -> int:
    value = _integer(text, "must be a port number (0-65535)")
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number (0-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a positive number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be 0 or a positive number of seconds")
    return value


def _collectd_format(text: str) -> str:
    value = text.strip()
    if value not in COLLECTD_FORMATS:
        raise ValueError("must be %s" % " or ".join(COLLECTD_FORMATS))
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("must be true or false")


def _text(text: str) -> str:
    return text.strip()


def _words(text: str) -> Tuple[str, ...]:
    return tuple(text.split())


def _account_id(text: str) -> str:
    text = text.strip()
    if len(text) != 12 or not text.isdigit():
        raise ValueError("must be 12 digits, as an AWS account id")
    return text


def _region(text: str) -> str:
    text = text.strip()
    if not text or not all(c.isalnum() or c == "-" for c in text) or len(text) > 50:
        raise ValueError("must be letters, digits and '-' (e.g. us-east-1)")
    return text


def _base_url(text: str) -> str:
    text = text.strip().rstrip("/")
    if text and urllib.parse.urlsplit(text).scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL, or empty")
    return text


def _host_names(text: str) -> Tuple[str, ...]:
    names = _words(text)
    for name in names:
        if "/" in name or "@" in name:
            raise ValueError("%r: list host names or host:port, not URLs" % name)
    return names


# (section, key) -> (converter, target attribute path). Every key of
# etc/restmq.conf is here, and nothing else is accepted.
OPTION_TABLE: Dict[Tuple[str, str], Tuple[Callable[[str], Any], str]] = {
    ("server", "port"): (_port, "server.port"),
    ("server", "listen"): (_text, "server.listen"),
    ("server", "max_message_bytes"): (_positive_int, "server.max_message_bytes"),
    ("server", "max_request_bytes"): (_positive_int, "server.max_request_bytes"),
    ("server", "max_header_bytes"): (_positive_int, "server.max_header_bytes"),
    ("server", "request_timeout"): (_seconds, "server.request_timeout"),
    ("server", "idle_timeout"): (_seconds, "server.idle_timeout"),
    ("server", "access_log"): (_boolean, "server.access_log"),
    ("server", "json_log"): (_boolean, "server.json_log"),
    ("server", "xheaders"): (_boolean, "server.xheaders"),
    ("server", "reuse_port"): (_boolean, "server.reuse_port"),
    ("server", "allowed_origins"): (_words, "server.allowed_origins"),
    ("server", "allowed_hosts"): (_host_names, "server.allowed_hosts"),
    ("server", "max_output_bytes"): (_positive_int, "server.max_output_bytes"),
    ("server", "max_connections"): (_non_negative_int, "server.max_connections"),
    ("server", "max_connections_per_ip"): (_non_negative_int, "server.max_connections_per_ip"),
    ("server", "header_timeout"): (_seconds, "server.header_timeout"),
    ("server", "metrics_max_queues"): (_positive_int, "server.metrics_max_queues"),
    ("redis", "url"): (_text, "redis.url"),
    ("redis", "host"): (_text, "redis.host"),
    ("redis", "port"): (_port, "redis.port"),
    ("redis", "db"): (_non_negative_int, "redis.db"),
    ("redis", "password"): (_text, "redis.password"),
    ("redis", "pool_size"): (_positive_int, "redis.pool_size"),
    ("redis", "connect_timeout"): (_seconds, "redis.connect_timeout"),
    ("redis", "reply_timeout"): (_seconds, "redis.reply_timeout"),
    ("redis", "wait_replicas"): (_non_negative_int, "redis.wait_replicas"),
    ("redis", "data_dir"): (_text, "redis.data_dir"),
    ("redis", "server_binary"): (_text, "redis.server_binary"),
    ("redis", "max_restarts"): (_non_negative_int, "redis.max_restarts"),
    ("dispatch", "sweep_interval"): (_seconds, "dispatch.sweep_interval"),
    ("dispatch", "buffer_limit"): (_positive_int, "dispatch.buffer_limit"),
    ("dispatch", "heartbeat_interval"): (_seconds, "dispatch.heartbeat_interval"),
    ("dispatch", "sse_retry_ms"): (_positive_int, "dispatch.sse_retry_ms"),
    ("dispatch", "history_size"): (_non_negative_int, "dispatch.history_size"),
    ("dispatch", "max_wait"): (_seconds, "dispatch.max_wait"),
    ("dispatch", "batch_size"): (_positive_int, "dispatch.batch_size"),
    ("dispatch", "max_stream_queues"): (_positive_int, "dispatch.max_stream_queues"),
    ("delivery", "lease_seconds"): (_seconds, "delivery.lease_seconds"),
    ("delivery", "max_receives"): (_positive_int, "delivery.max_receives"),
    ("delivery", "max_delay"): (_seconds, "delivery.max_delay"),
    ("delivery", "idempotency_window"): (_seconds, "delivery.idempotency_window"),
    ("delivery", "stop_holds_pops"): (_boolean, "delivery.stop_holds_pops"),
    ("delivery", "prefetch"): (_positive_int, "delivery.prefetch"),
    ("delivery", "max_batch"): (_positive_int, "delivery.max_batch"),
    ("delivery", "max_attributes"): (_positive_int, "delivery.max_attributes"),
    ("delivery", "max_attribute_bytes"): (_positive_int, "delivery.max_attribute_bytes"),
    ("delivery", "max_rpc_timeout"): (_seconds, "delivery.max_rpc_timeout"),
    ("delivery", "popped_ttl"): (_non_negative_seconds, "delivery.popped_ttl"),
    ("collectd", "format"): (_collectd_format, "collectd.format"),
    ("acl", "file"): (_text, "acl.file"),
    ("sqs", "port"): (_port, "sqs.port"),
    ("sqs", "listen"): (_text, "sqs.listen"),
    ("sqs", "account_id"): (_account_id, "sqs.account_id"),
    ("sqs", "region"): (_region, "sqs.region"),
    ("sqs", "credentials"): (_text, "sqs.credentials"),
    ("sqs", "base_url"): (_base_url, "sqs.base_url"),
    ("sqs", "allowed_hosts"): (_host_names, "sqs.allowed_hosts"),
    ("sqs", "max_message_bytes"): (_positive_int, "sqs.max_message_bytes"),
    ("sqs", "max_inflight"): (_positive_int, "sqs.max_inflight"),
    ("sqs", "signature_max_age"): (_seconds, "sqs.signature_max_age"),
}


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``redis://[:password@]host:port/db``, ``unix:///path?db=N`` or
    ``sentinel://host:port[,host:port...]/master-name[?db=N&password=...]``.

    :raises ValueError: when the URL is not one of those.
    """
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    passwords = query.get("password")
    password = parsed.password or (passwords[0] if passwords else None)
    try:
        db = int((query.get("db") or ["0"])[0])
    except ValueError:
        raise ValueError("db must be a number") from None
    if parsed.scheme == "redis":
        if not parsed.hostname:
            raise ValueError("redis:// URL needs a host")
        path = parsed.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError("the path of a redis:// URL is the db number")
            db = int(path)
        try:
            port = parsed.port or 6379
        except ValueError:
            raise ValueError("bad port") from None
        return RedisTarget("tcp", parsed.hostname, port, "", db, password)
    if parsed.scheme == "unix":
        if not parsed.path:
            raise ValueError("unix:// URL needs a socket path")
        return RedisTarget("unix", "", 0, parsed.path, db, password)
    if parsed.scheme == "sentinel":
        netloc = parsed.netloc.rpartition("@")[2]
        sentinels = []
        for item in netloc.split(","):
            host, sep, port_text = item.rpartition(":")
            if not sep or not host or not port_text.isdigit():
                raise ValueError("sentinel addresses are host:port[,host:port...]")
            sentinels.append((host, int(port_text)))
        master = parsed.path.strip("/")
        if not master:
            raise ValueError("sentinel:// URL needs /<master-name>")
        return RedisTarget("sentinel", "", 0, "", db, password, tuple(sentinels), master)
    raise ValueError("scheme must be redis://, unix:// or sentinel://")


def read_ini(path: str, keep_case: bool = False) -> configparser.ConfigParser:
    """An INI file (the configuration, the ACL, the SQS credentials) parsed, no
    interpolation; ``keep_case`` keeps the case of keys.

    :raises ConfigError: one line naming the file and what is wrong with it.
    """
    parser = configparser.ConfigParser(interpolation=None)
    if keep_case:
        parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError("%s: %s" % (path, str(exc).splitlines()[0])) from None
    return parser


def _read_file(path: str) -> Dict[Tuple[str, str], str]:
    parser = read_ini(path)
    values = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            if (section, key) not in OPTION_TABLE:
                raise ConfigError("%s: [%s] %s: unknown key" % (path, section, key))
            values[(section, key)] = value
    return values


def load_config(path: Optional[str] = None,
                overrides: Optional[Mapping[Tuple[str, str], str]] = None) -> Config:
    """Build the Config from defaults, the INI file at ``path`` and ``overrides``.

    :param overrides: (section, key) -> text, from the command line; they win.
    :raises ConfigError: naming file, section and key of the first bad value.
    """
    raw: Dict[Tuple[str, str], Tuple[str, str]] = {}
    if path:
        for item, value in _read_file(path).items():
            raw[item] = (value, path)
    for item, value in (overrides or {}).items():
        if item not in OPTION_TABLE:
            raise ConfigError("unknown option [%s] %s" % item)
        raw[item] = (value, "command line")

    sections: Dict[str, Dict[str, Any]] = {
        "server": {}, "redis": {}, "dispatch": {}, "delivery": {}, "collectd": {}, "acl": {},
        "sqs": {}}
    for (section, key), (text, origin) in raw.items():
        convert, field = OPTION_TABLE[(section, key)]
        try:
            value = convert(text)
        except ValueError as exc:
            raise ConfigError("%s: [%s] %s = %r: %s" % (origin, section, key, text, exc)) from None
        sections[field.split(".")[0]][field.split(".")[1]] = value

    redis_values = sections["redis"]
    url = redis_values.pop("url", "")
    host = redis_values.pop("host", "")
    port = redis_values.pop("port", 6379)
    db = redis_values.get("db", 0)
    password = redis_values.pop("password", "") or None
    target: Optional[RedisTarget] = None
    if url:
        try:
            target = parse_redis_url(url)
        except ValueError as exc:
            origin = raw[("redis", "url")][1]
            raise ConfigError("%s: [redis] url = %r: %s" % (origin, url, exc)) from None
        if ("redis", "db") in raw:
            target = attr.evolve(target, db=db)
        if password and not target.password:
            target = attr.evolve(target, password=password)
    elif host:
        target = RedisTarget("tcp", host, port, "", db, password)
    elif ("redis", "port") in raw:
        target = RedisTarget("tcp", "127.0.0.1", port, "", db, password)

    if not redis_values.get("data_dir"):
        redis_values["data_dir"] = default_data_dir()
    server = ServerConfig(**sections["server"])
    if server.max_request_bytes < server.max_message_bytes:
        server = attr.evolve(server, max_request_bytes=server.max_message_bytes + 64 * 1024)
    acl_file = sections["acl"].get("file", "")
    if acl_file and not os.path.isfile(acl_file):
        origin = raw[("acl", "file")][1]
        raise ConfigError("%s: [acl] file = %r: no such file" % (origin, acl_file))
    sqs = SqsConfig(**sections["sqs"])
    if sqs.credentials and not os.path.isfile(sqs.credentials):
        origin = raw[("sqs", "credentials")][1]
        raise ConfigError("%s: [sqs] credentials = %r: no such file" % (origin, sqs.credentials))
    return Config(
        server=server,
        redis=RedisConfig(target=target, **redis_values),
        dispatch=DispatchConfig(**sections["dispatch"]),
        delivery=DeliveryConfig(**sections["delivery"]),
        collectd=CollectdConfig(**sections["collectd"]),
        sqs=sqs,
        acl_file=acl_file,
        source=path or "<defaults>",
    )
