"""JSON logs: every twisted.logger event as one JSON object per line, its fields kept.

``twistd --logger restmq.logs.json_observer -n restmq`` (or ``json_log = true`` in
``[server]``, or ``--json-log``) writes them to standard output, where journald,
Docker or a log shipper picks them up.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import IO, Any, Dict, Optional

import orjson
from twisted.logger import FileLogObserver, formatEvent

__all__ = ["json_observer", "format_json"]

# event keys that are Twisted's own bookkeeping, not fields of the message
_INTERNAL = frozenset(("log_logger", "log_source", "log_io", "log_trace", "log_flattened",
                       "log_format", "log_level", "log_namespace", "log_time", "log_system",
                       "log_failure", "log_text", "log_legacy", "format", "message", "isError",
                       "system", "time", "why", "failure"))


def _namespace(event: Dict[str, Any]) -> str:
    """The event's namespace; for events of Twisted's legacy ``twisted.python.log``
    (its TCP ports, reconnecting factories, libraries still on that API), which all
    arrive as ``log_legacy``, the logging context's system when it names one, else
    ``twisted``: RestMQ's own lines always carry their module's namespace."""
    namespace = event.get("log_namespace") or ""
    if namespace != "log_legacy":
        return namespace
    system = event.get("log_system")
    return system if isinstance(system, str) and system not in ("", "-") else "twisted"


def format_json(event: Dict[str, Any]) -> Optional[str]:
    """One event as a JSON line: ``time``, ``level``, ``namespace``, ``message``
    (the formatted text), every field of the event, and ``traceback`` for failures."""
    record: Dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": _namespace(event),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key not in _INTERNAL and not key.startswith("_"):
            record[key] = value
    duration = record.get("duration_ms")
    if isinstance(duration, float):
        record["duration_ms"] = round(duration, 2)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return orjson.dumps(record, default=repr).decode("utf-8") + "\n"


def json_observer(out: Optional[IO[str]] = None) -> FileLogObserver:
    """The log observer factory for ``twistd --logger``: JSON lines on ``out``
    (standard output by default)."""
    return FileLogObserver(out if out is not None else sys.stdout, format_json)
