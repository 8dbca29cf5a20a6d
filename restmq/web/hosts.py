"""Which ``Host`` a request may name, and which browser ``Origin`` may change the broker.

A page that controls its own DNS (DNS rebinding) can point its name at the
broker: the browser then sends ``Host: evil.example`` and ``Origin:
http://evil.example`` and reads the answers as same-origin. So the Host is
checked against an allow-list on every request, and the Origin is compared
with that checked Host, never with a Host the client chose freely.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["AllowedHosts", "parse_host", "DEFAULT_NAMES"]

#: names that always reach the loopback (no DNS answer can rebind them)
DEFAULT_NAMES = ("localhost",)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_WILDCARDS = ("", "0.0.0.0", "::", "*")
_MEMO = 256


def parse_host(text: str) -> Optional[Tuple[str, Optional[int]]]:
    """``host[:port]`` (``[v6]:port`` for IPv6) as (lowercased name, port or None);
    None when it is not a well-formed Host value."""
    text = text.strip().lower()
    if not text or any(c in text for c in "/\\@ \t,?#"):
        return None
    port: Optional[int] = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError:
            return None
        name = "[%s]" % name
    else:
        name, colon, rest = text.partition(":")
        rest = colon + rest
        if ":" in rest[1:]:
            return None  # a bare IPv6 address must be bracketed
    if rest:
        if not rest.startswith(":") or not (rest[1:].isascii() and rest[1:].isdigit()) or len(rest) > 6:
            return None
        port = int(rest[1:])
        if port > 65535:
            return None
    name = name.rstrip(".") if not name.startswith("[") else name
    if not name:
        return None
    return name, port


def _is_ip_literal(name: str) -> bool:
    if name.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The Host values this broker answers: any IP literal (a rebinding page always
    sends its own name), ``localhost``, the listen address, and the configured
    names. An entry ``name`` matches any port, ``name:port`` that port only;
    ``*`` turns the check off.

    :param names: the configured ``allowed_hosts``.
    :param listen: the ``listen`` interface (a name there is allowed too).
    """

    def __init__(self, names: Iterable[str] = (), listen: str = "") -> None:
        self.any = False
        self._names: dict = {}
        self._memo: Dict[str, bool] = {}
        entries = list(DEFAULT_NAMES) + list(names)
        if listen not in _WILDCARDS:
            entries.append(listen)
        for entry in entries:
            if entry.strip() == "*":
                self.any = True
                continue
            parsed = parse_host(entry)
            if parsed is None:
                raise ValueError("%r is not a host name or host:port" % entry)
            name, port = parsed
            self._names.setdefault(name, set()).add(port)

    def allows(self, host: Optional[str]) -> bool:
        """Whether a request carrying ``Host: host`` is served (None: no Host header,
        which no browser sends)."""
        if host is None or self.any:
            return True
        # every request asks, almost always with the same few values: remembered
        # (at most _MEMO of them, so a client sending endless names bounds it)
        known = self._memo.get(host)
        if known is None:
            if len(self._memo) >= _MEMO:
                self._memo.clear()
            known = self._memo[host] = self._allows(host)
        return known

    def _allows(self, host: str) -> bool:
        parsed = parse_host(host)
        if parsed is None:
            return False
        name, port = parsed
        if _is_ip_literal(name):
            return True
        ports = self._names.get(name)
        return ports is not None and (None in ports or port in ports)

    @staticmethod
    def same_origin(origin: str, host: Optional[str]) -> bool:
        """Whether ``origin`` (scheme://host[:port]) is the host this request was sent
        to. Only meaningful once :meth:`allows` accepted ``host``."""
        if host is None:
            return False
        try:
            parts = urlsplit(origin)
            origin_port = parts.port
        except ValueError:
            return False
        default = _DEFAULT_PORTS.get(parts.scheme)
        if default is None or not parts.hostname:
            return False
        wanted = parse_host(host)
        if wanted is None:
            return False
        name = parts.hostname.lower().rstrip(".")
        if ":" in name:
            name = "[%s]" % name
        host_name, host_port = wanted
        return name == host_name and (origin_port or default) == (host_port or default)
