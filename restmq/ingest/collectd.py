"""collectd's write_http bodies -> one plain dict per value list or notification.

Values come as ``Format "JSON"`` (an array of value lists) or ``Format
"Command"`` (``PUTVAL`` lines of the plain text protocol); notifications as
write_http's JSON (Alertmanager-style alerts, or plain notification objects),
``PUTNOTIF`` lines, or the ``Key: value`` header and message that
``NotificationExec`` programs read (what the original RestMQ's README piped
in with curl). Anything else raises ``BadRequest`` naming the line or item.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

import orjson

from restmq.errors import BadRequest

__all__ = ["DATA_QUEUE", "EVENT_QUEUE", "parse_data", "parse_events", "original_data", "original_events"]

DATA_QUEUE = "collectd_data"
EVENT_QUEUE = "collectd_event"

_INT = re.compile(r"[-+]?[0-9]+\Z")
_EXEC_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9_]*): ?(.*)\Z")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_IDENTITY = ("host", "plugin", "plugin_instance", "type", "type_instance")
_U64 = 2 ** 64
_I64 = 2 ** 63


def _text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    if not text.strip():
        raise BadRequest("empty body")
    return text


def _is_json(text: str) -> bool:
    return text.lstrip()[:1] in ("[", "{")


def _json(text: str) -> List[Any]:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("malformed JSON: %s" % exc) from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise BadRequest("empty JSON array")
    return items


# values

def parse_data(body: bytes, now: float) -> List[Dict[str, Any]]:
    """The value lists of a write_http body (JSON or PUTVAL lines), in order.

    Each is ``{host, plugin, plugin_instance, type, type_instance, time,
    interval, values, dstypes, dsnames, meta}``; PUTVAL carries no data source
    names or types (they live in collectd's types.db), so those are null.
    ``now`` stands in for a PUTVAL time of ``N``.

    :raises BadRequest: naming the first bad item or line.
    """
    text = _text(body)
    if _is_json(text):
        return [_json_value_list(item, index) for index, item in enumerate(_json(text))]
    out: List[Dict[str, Any]] = []
    for number, words in _command_lines(text):
        if words[0].upper() != "PUTVAL":
            raise BadRequest("line %d: expected PUTVAL, got %r" % (number, words[0][:40]))
        out.extend(_putval(words, number, now))
    return out


def _json_value_list(item: Any, index: int) -> Dict[str, Any]:
    where = "value list %d" % index
    if not isinstance(item, dict):
        raise BadRequest("%s: expected an object" % where)
    out: Dict[str, Any] = _identity(item, where)
    values = item.get("values")
    if not isinstance(values, list) or not values:
        raise BadRequest("%s: 'values' must be a non-empty array" % where)
    if not all(value is None or _is_number(value) for value in values):
        raise BadRequest("%s: 'values' must hold numbers (or null)" % where)
    for name in ("dstypes", "dsnames"):
        names = item.get(name)
        if names is not None and (not isinstance(names, list) or len(names) != len(values)
                                  or not all(isinstance(n, str) for n in names)):
            raise BadRequest("%s: '%s' must be %d strings, one per value" % (where, name, len(values)))
    out["time"] = _number_field(item, "time", where)
    out["interval"] = _number_field(item, "interval", where)
    out["values"] = values
    out["dstypes"] = item.get("dstypes")
    out["dsnames"] = item.get("dsnames")
    meta = item.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest("%s: 'meta' must be an object" % where)
    out["meta"] = meta
    return out


def _identity(item: Dict[str, Any], where: str,
              required: Tuple[str, ...] = ("host", "plugin", "type")) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name in _IDENTITY:
        value = item.get(name, "" if name not in required else None)
        if not isinstance(value, str) or (name in required and not value):
            raise BadRequest("%s: '%s' must be a%s string"
                             % (where, name, " non-empty" if name in required else ""))
        out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_field(item: Dict[str, Any], name: str, where: str) -> Optional[float]:
    value = item.get(name)
    if value is not None and not _is_number(value):
        raise BadRequest("%s: '%s' must be a number" % (where, name))
    return value


def _putval(words: List[str], number: int, now: float) -> List[Dict[str, Any]]:
    """``PUTVAL host/plugin[-inst]/type[-inst] [interval=N] time:v[:v...] ...``:
    one value list per ``time:values`` group."""
    where = "line %d" % number
    if len(words) < 3:
        raise BadRequest("%s: PUTVAL needs an identifier and values" % where)
    identity = _split_identifier(words[1], where)
    interval: Optional[float] = None
    meta: Dict[str, str] = {}
    groups: List[List[str]] = []
    for word in words[2:]:
        key, sep, value = word.partition("=")
        if sep and ":" not in key:
            if key == "interval":
                interval = _float(value, where, "interval")
            else:
                meta[key] = value
            continue
        parts = word.split(":")
        if len(parts) < 2:
            raise BadRequest("%s: %r is not time:value[:value...]" % (where, word[:60]))
        groups.append(parts)
    if not groups:
        raise BadRequest("%s: PUTVAL without values" % where)
    return [dict(identity, time=now if parts[0] == "N" else _float(parts[0], where, "time"),
                 interval=interval, values=[_value(part, where) for part in parts[1:]],
                 dstypes=None, dsnames=None, meta=dict(meta) or None)
            for parts in groups]


def _split_identifier(identifier: str, where: str) -> Dict[str, str]:
    parts = identifier.split("/")
    if len(parts) != 3 or not all(parts):
        raise BadRequest("%s: identifier %r is not host/plugin[-instance]/type[-instance]"
                         % (where, identifier[:120]))
    plugin, _, plugin_instance = parts[1].partition("-")
    type_, _, type_instance = parts[2].partition("-")
    if not plugin or not type_:
        raise BadRequest("%s: identifier %r has an empty plugin or type" % (where, identifier[:120]))
    return {"host": parts[0], "plugin": plugin, "plugin_instance": plugin_instance,
            "type": type_, "type_instance": type_instance}


def _float(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequest("%s: %s %r is not a number" % (where, name, text[:40])) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest("%s: %s must be finite" % (where, name))
    return value


def _value(text: str, where: str) -> Optional[float]:
    """A PUTVAL value: integers stay exact (counters reach 2**64), ``U``,
    NaN and infinities become null, as write_http's JSON has them."""
    if text == "U":
        return None
    if _INT.match(text):
        number = int(text)
        if -_I64 <= number < _U64:
            return number
        return float(number)
    try:
        value = float(text)
    except ValueError:
        raise BadRequest("%s: value %r is not a number" % (where, text[:40])) from None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def _command_lines(text: str) -> List[Tuple[int, List[str]]]:
    """Non-empty lines (1-based number, words); double-quoted words may hold
    spaces and backslash escapes, as in collectd's plain text protocol."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            out.append((number, _words(line, number)))
    return out


def _words(line: str, number: int, keep_rest: str = "") -> List[str]:
    words: List[str] = []
    pos = 0
    length = len(line)
    while pos < length:
        if line[pos] in " \t":
            pos += 1
            continue
        word: List[str] = []
        while pos < length and line[pos] not in " \t":
            char = line[pos]
            if char == '"':
                pos += 1
                while pos < length and line[pos] != '"':
                    if line[pos] == "\\" and pos + 1 < length:
                        pos += 1
                    word.append(line[pos])
                    pos += 1
                if pos >= length:
                    raise BadRequest("line %d: unterminated quoted string" % number)
                pos += 1
                continue
            if (keep_rest and not word and line.startswith(keep_rest, pos)
                    and line[pos + len(keep_rest):pos + len(keep_rest) + 1] != '"'):
                # PUTNOTIF message=unquoted text: the rest of the line is the message
                words.append(line[pos:].rstrip())
                return words
            word.append(char)
            pos += 1
        words.append("".join(word))
    return words


# notifications

def parse_events(body: bytes, now: float) -> List[Dict[str, Any]]:
    """The notifications of a body, in order, each as ``{severity, time,
    host, plugin, plugin_instance, type, type_instance, message, meta}``
    (Alertmanager-style JSON also keeps its ``alertname`` and ``labels``).

    :raises BadRequest: naming the first bad item or line.
    """
    text = _text(body)
    if _is_json(text):
        return [_json_notification(item, index, now) for index, item in enumerate(_json(text))]
    first = text.lstrip().split(None, 1)[0]
    if first.upper() == "PUTNOTIF":
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                out.append(_putnotif(line, number, now))
        return out
    if _EXEC_HEADER.match(text.lstrip().splitlines()[0]):
        return [_exec_notification(text.lstrip(), now)]
    raise BadRequest("expected JSON, PUTNOTIF lines or a NotificationExec header")


def _notification(severity: Any, time: Any, message: Any, where: str) -> Dict[str, Any]:
    if not isinstance(severity, str) or not severity:
        raise BadRequest("%s: 'severity' must be failure, warning or okay" % where)
    if not isinstance(message, str):
        raise BadRequest("%s: 'message' must be a string" % where)
    return {"severity": severity.lower(), "time": time, "message": message}


def _json_notification(item: Any, index: int, now: float) -> Dict[str, Any]:
    where = "notification %d" % index
    if not isinstance(item, dict):
        raise BadRequest("%s: expected an object" % where)
    if "labels" in item:
        return _alert(item, where, now)
    out = _notification(item.get("severity"), _number_field(item, "time", where),
                        item.get("message", ""), where)
    out.update(_identity(item, where, required=()))
    if out["time"] is None:
        out["time"] = now
    meta = item.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest("%s: 'meta' must be an object" % where)
    out["meta"] = meta
    return out


def _alert(item: Dict[str, Any], where: str, now: float) -> Dict[str, Any]:
    """write_http's notification: ``[{"labels": {alertname, instance, severity,
    service, ...}, "annotations": {summary, ...}, "startsAt": RFC 3339}]``."""
    labels = item["labels"]
    annotations = item.get("annotations", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("%s: 'labels' must be an object of strings" % where)
    if not isinstance(annotations, dict):
        raise BadRequest("%s: 'annotations' must be an object" % where)
    started = item.get("startsAt")
    time = now if started is None else _rfc3339(started, where)
    out = _notification(labels.get("severity"), time, annotations.get("summary", ""), where)
    out.update(dict.fromkeys(_IDENTITY, ""))
    out["host"] = labels.get("instance", "")
    out["meta"] = {key: value for key, value in annotations.items() if key != "summary"} or None
    out["alertname"] = labels.get("alertname")
    out["labels"] = labels
    return out


def _rfc3339(value: Any, where: str) -> float:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise BadRequest("%s: 'startsAt' must be an RFC 3339 time" % where)


def _putnotif(line: str, number: int, now: float) -> Dict[str, Any]:
    """``PUTNOTIF severity=... time=... [host=... plugin=... ...] message=...``;
    an unquoted message runs to the end of the line."""
    where = "line %d" % number
    words = _words(line, number, keep_rest="message=")
    if words[0].upper() != "PUTNOTIF":
        raise BadRequest("%s: expected PUTNOTIF, got %r" % (where, words[0][:40]))
    fields: Dict[str, Any] = {}
    meta: Dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise BadRequest("%s: %r is not key=value" % (where, word[:60]))
        if key == "time":
            fields[key] = _float(value, where, "time")
        elif key in ("severity", "message") or key in _IDENTITY:
            fields[key] = value
        else:
            meta[key] = value
    if "message" not in fields:
        raise BadRequest("%s: PUTNOTIF needs message=" % where)
    out = _notification(fields.get("severity"), fields.get("time", now), fields["message"], where)
    out.update({name: fields.get(name, "") for name in _IDENTITY})
    out["meta"] = meta or None
    return out


_EXEC_FIELDS = {"severity": "severity", "time": "time", "host": "host", "plugin": "plugin",
                "plugininstance": "plugin_instance", "type": "type", "typeinstance": "type_instance"}


def _exec_notification(text: str, now: float) -> Dict[str, Any]:
    """``Severity: WARNING`` / ``Time: 1200928930.515`` / ``Host: ...`` header
    lines, an empty line, then the message (collectd-exec(5))."""
    header, _, message = text.replace("\r\n", "\n").partition("\n\n")
    fields: Dict[str, Any] = {}
    meta: Dict[str, str] = {}
    for number, line in enumerate(header.split("\n"), 1):
        match = _EXEC_HEADER.match(line)
        if match is None:
            raise BadRequest("line %d: expected 'Key: value'" % number)
        key, value = match.groups()
        name = _EXEC_FIELDS.get(key.lower())
        if name == "time":
            fields[name] = _float(value, "line %d" % number, "Time")
        elif name is not None:
            fields[name] = value
        else:
            meta[_CAMEL.sub("_", key).lower()] = value
    out = _notification(fields.get("severity"), fields.get("time", now), message.strip("\n"), "header")
    out.update({name: fields.get(name, "") for name in _IDENTITY})
    out["meta"] = meta or None
    return out


# the original RestMQ's shapes (what its collectd_data / collectd_event consumers parse)

def original_data(body: bytes, content_type: str, now: float) -> str:
    """One message for a whole request, as the original stored it: a JSON body
    as posted (write_http's own value lists), PUTVAL lines as a JSON array of
    ``{"host", "plugin_instance", "type_instance", "interval", "value"}`` of
    strings, one per ``time:values`` group (``plugin_instance`` is
    ``plugin[-instance]`` as written, ``type_instance`` ``type[-instance]``,
    ``value`` the ``time:v1[:v2...]`` text). Lines other than PUTVAL are left
    out, as the original did.

    :raises BadRequest: malformed JSON, a bad PUTVAL line, or no PUTVAL line.
    """
    text = _text(body)
    declared = content_type.split(";", 1)[0].strip().lower()
    if declared == "application/json" or (declared != "text/plain" and _is_json(text)):
        for index, item in enumerate(_json(text)):
            _json_value_list(item, index)  # refuse what the parsed form would refuse
        return text
    out: List[Dict[str, Any]] = []
    for number, words in _command_lines(text):
        if words[0].upper() != "PUTVAL":
            continue
        _putval(words, number, now)  # refuse what the parsed form would refuse
        host, plugin, type_ = words[1].split("/")
        interval = next((word.partition("=")[2] for word in words[2:]
                         if word.startswith("interval=")), None)
        for word in words[2:]:
            key, sep, _ = word.partition("=")
            if not (sep and ":" not in key):
                out.append({"host": host, "plugin_instance": plugin, "type_instance": type_,
                            "interval": interval, "value": word})
    if not out:
        raise BadRequest("no PUTVAL line")
    return orjson.dumps(out).decode("utf-8")


# collectd-exec(5) header names, and how the original named them in its list
_ORIGINAL_HEADERS = {name.lower(): name.lower() for name in (
    "Severity", "Time", "Host", "Plugin", "PluginInstance", "Type", "TypeInstance",
    "DataSource", "CurrentValue", "WarningMin", "WarningMax", "FailureMin", "FailureMax")}


def original_events(body: bytes, now: float) -> List[str]:
    """The original's shape of a notification: a JSON array of one-key objects,
    ``[{"severity": "WARNING"}, {"time": "..."}, {"host": "..."}, ...,
    {"event_text": "..."}]`` (header names lower-cased, values as text).

    A NotificationExec text (the only input the original took) is one message;
    each notification of a JSON or PUTNOTIF body (which it did not know) is one
    message of the same shape.

    :raises BadRequest: what parse_events refuses.
    """
    text = _text(body)
    stripped = text.lstrip()
    if not _is_json(stripped) and stripped.split(None, 1)[0].upper() != "PUTNOTIF":
        return [_original_exec(stripped)]
    out = []
    for item in parse_events(body, now):
        fields: List[Dict[str, str]] = [{"severity": str(item["severity"]).upper()},
                                        {"time": _number_text(item["time"])}]
        for name in _IDENTITY:
            if item.get(name):
                fields.append({name.replace("_", ""): item[name]})
        fields.append({"event_text": item["message"]})
        out.append(orjson.dumps(fields).decode("utf-8"))
    return out


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _original_exec(text: str) -> str:
    """Header lines, an empty line, the message (the original took the last line)."""
    normalized = text.replace("\r\n", "\n")
    header, sep, message = normalized.partition("\n\n")
    if sep:
        lines, event = header.split("\n"), message.strip("\n")
    else:
        lines = normalized.rstrip("\n").split("\n")
        event = lines.pop()
    fields: List[Dict[str, str]] = []
    for line in lines:
        match = _EXEC_HEADER.match(line)
        if match is not None and match.group(1).lower() in _ORIGINAL_HEADERS:
            fields.append({_ORIGINAL_HEADERS[match.group(1).lower()]: match.group(2)})
    fields.append({"event_text": event})
    return orjson.dumps(fields).decode("utf-8")
