"""Access rules, compatible with the original RestMQ ACL file.

Sections ``rest:producer``, ``rest:consumer``, ``comet:consumer`` and
``websocket:consumer`` (plus ``ops`` for health, metrics and the dashboard)
hold ``hosts_allow``, ``hosts_deny`` (addresses or CIDR networks, or ``all``),
``username``/``password`` (HTTP Basic) and ``token`` (Bearer header or
``token`` query parameter). A missing section allows everyone.

The SQS listener's access keys live in their own file (``[sqs] credentials``):
one section per access key id with its ``secret`` and the queues it may
``send`` to and ``receive`` from (space separated names or fnmatch patterns).
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
import re
from typing import Dict, Optional, Tuple, Union

import attr

from restmq.config import read_ini
from restmq.errors import AddressDenied, ConfigError, Unauthorized

__all__ = ["CATEGORIES", "Rule", "Credentials", "Acl", "load_acl",
           "SqsKey", "SqsKeys", "load_sqs_credentials", "SQS_RIGHTS"]

CATEGORIES = ("rest:producer", "rest:consumer", "comet:consumer", "websocket:consumer", "ops")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@attr.s(frozen=True, auto_attribs=True)
class Credentials:
    """What a request presented: Basic user/password and/or a token."""

    username: Optional[str] = None
    password: Optional[str] = None
    token: Optional[str] = None


@attr.s(frozen=True, auto_attribs=True)
class Rule:
    """One section of the ACL file. ``None`` network lists mean "no list"."""

    allow: Optional[Tuple[Network, ...]] = None
    deny: Optional[Tuple[Network, ...]] = None
    deny_all: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    token: Optional[str] = None

    @property
    def needs_credentials(self) -> bool:
        return bool((self.username and self.password) or self.token)


def _equal(given: Optional[str], expected: str) -> bool:
    # compare_digest takes the same time whatever the first differing byte
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _address(text: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _in(address, networks: Tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def _check_credentials(rule: Rule, credentials: Credentials) -> None:
    if not rule.needs_credentials:
        return
    if rule.token and _equal(credentials.token, rule.token):
        return
    if rule.username and rule.password:
        user_ok = _equal(credentials.username, rule.username)
        password_ok = _equal(credentials.password, rule.password)
        if user_ok and password_ok:
            return
    raise Unauthorized("credentials missing or wrong")


def check(rule: Rule, address: str, credentials: Credentials) -> None:
    """Apply one rule the way the original did, with networks instead of prefixes.

    ``hosts_allow = all`` is the same as no allow list, as in the original.
    An address in ``hosts_allow`` passes to the credential check; otherwise, with
    an allow list and no deny list, it is refused. An address in ``hosts_deny``
    is refused. Then credentials are checked when the rule has any.

    :raises AddressDenied: the address is not allowed (a Forbidden).
    :raises Unauthorized: credentials are required and missing or wrong.
    """
    check_address(rule, address)
    _check_credentials(rule, credentials)


def check_address(rule: Rule, address: str) -> None:
    """The address half of :func:`check` (``hosts_allow``, ``hosts_deny``).

    :raises Forbidden: the address is not allowed.
    """
    ip = _address(address)
    if rule.allow is not None:
        if _in(ip, rule.allow):
            return
        if rule.deny is None and not rule.deny_all:
            raise AddressDenied("address %s is not allowed" % address)
    if rule.deny_all or _in(ip, rule.deny or ()):
        raise AddressDenied("address %s is not allowed" % address)


@attr.s(frozen=True, auto_attribs=True)
class Acl:
    """The rules by category. An empty Acl allows everything."""

    rules: Dict[str, Rule] = attr.Factory(dict)

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    def check(self, category: str, address: str, credentials: Credentials) -> None:
        """:raises Forbidden, Unauthorized: see :func:`check`."""
        rule = self.rules.get(category)
        if rule is not None:
            check(rule, address, credentials)

    def check_address(self, category: str, address: str) -> None:
        """Only the address rules of ``category``. :raises Forbidden: see :func:`check_address`."""
        rule = self.rules.get(category)
        if rule is not None:
            check_address(rule, address)


def _prefix_to_network(word: str) -> str:
    """The original matched string prefixes: "192.168.0." means 192.168.0.0/24."""
    parts = word.rstrip(".").split(".")
    if word.endswith(".") and 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        return ".".join(parts + ["0"] * (4 - len(parts))) + "/%d" % (8 * len(parts))
    return word


def _networks(text: str, where: str) -> Tuple[Optional[Tuple[Network, ...]], bool]:
    """Parse a host list; "all" gives (None, True)."""
    words = text.split()
    if words == ["all"]:
        return None, True
    networks = []
    for word in words:
        try:
            networks.append(ipaddress.ip_network(_prefix_to_network(word), strict=False))
        except ValueError:
            raise ConfigError("%s: %r is not an address or network" % (where, word)) from None
    return tuple(networks), False


def load_acl(path: str) -> Acl:
    """Read an ACL file.

    :raises ConfigError: naming the file, section and key at fault.
    """
    parser = read_ini(path)
    rules = {}
    for section in parser.sections():
        if section not in CATEGORIES:
            raise ConfigError("%s: [%s]: unknown section (use %s)" % (path, section, ", ".join(CATEGORIES)))
        values = dict(parser.items(section))
        unknown = set(values) - {"hosts_allow", "hosts_deny", "username", "password", "token"}
        if unknown:
            raise ConfigError("%s: [%s] %s: unknown key" % (path, section, sorted(unknown)[0]))
        allow = deny = None
        deny_all = False
        if values.get("hosts_allow", "").strip():
            # "hosts_allow = all" means no allow list, as in the original
            allow, _ = _networks(values["hosts_allow"], "%s: [%s] hosts_allow" % (path, section))
        if values.get("hosts_deny", "").strip():
            deny, deny_all = _networks(values["hosts_deny"], "%s: [%s] hosts_deny" % (path, section))
        username = values.get("username", "").strip() or None
        password = values.get("password", "").strip() or None
        if bool(username) != bool(password):
            raise ConfigError("%s: [%s]: username and password go together" % (path, section))
        rules[section] = Rule(
            allow=allow, deny=deny, deny_all=deny_all,
            username=username, password=password,
            token=values.get("token", "").strip() or None)
    return Acl(rules)


#: what an SQS access key may do with a queue: ``send`` (produce and manage, as
#: rest:producer does) and ``receive`` (consume, as rest:consumer does)
SQS_RIGHTS = ("send", "receive")

_ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9]{1,128}\Z")


@attr.s(frozen=True, auto_attribs=True)
class SqsKey:
    """One access key of the SQS listener: its secret and its queue patterns."""

    access_key: str
    secret: str = attr.ib(repr=False)
    send: Tuple[str, ...] = ()
    receive: Tuple[str, ...] = ()

    def may(self, right: str, queue: str) -> bool:
        """Whether this key has ``right`` ("send" or "receive") on ``queue``."""
        patterns = self.send if right == "send" else self.receive
        return any(fnmatch.fnmatchcase(queue, pattern) for pattern in patterns)

    def sees(self, queue: str) -> bool:
        """Any right on ``queue``: it may learn the queue's URL and attributes."""
        return self.may("send", queue) or self.may("receive", queue)


@attr.s(frozen=True, auto_attribs=True)
class SqsKeys:
    """The SQS access keys by id. Empty: no signature is checked (as ElasticMQ)."""

    keys: Dict[str, SqsKey] = attr.Factory(dict)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def get(self, access_key: str) -> Optional[SqsKey]:
        return self.keys.get(access_key)


def load_sqs_credentials(path: str) -> SqsKeys:
    """Read an SQS credentials file (see etc/sqs-credentials.conf).

    :raises ConfigError: naming the file, section and key at fault.
    """
    parser = read_ini(path, keep_case=True)  # access key ids and secrets keep their case
    keys = {}
    for section in parser.sections():
        if not _ACCESS_KEY_ID.match(section):
            raise ConfigError("%s: [%s]: an access key id is 1-128 letters and digits" % (path, section))
        values = dict(parser.items(section))
        unknown = set(values) - {"secret", "send", "receive"}
        if unknown:
            raise ConfigError("%s: [%s] %s: unknown key" % (path, section, sorted(unknown)[0]))
        secret = values.get("secret", "").strip()
        if not secret:
            raise ConfigError("%s: [%s]: secret is missing" % (path, section))
        keys[section] = SqsKey(section, secret, tuple(values.get("send", "").split()),
                               tuple(values.get("receive", "").split()))
    if not keys:
        raise ConfigError("%s: no access key (one [ACCESS_KEY_ID] section per key)" % path)
    return SqsKeys(keys)
