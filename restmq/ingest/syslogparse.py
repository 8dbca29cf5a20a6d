"""Syslog without Twisted: TCP framing (RFC 6587) and RFC 3164 / RFC 5424 line parsing.

``Framer`` cuts a byte stream into syslog messages (octet-counted or newline
terminated) holding at most ``max_line`` bytes of one message; ``parse_line``
turns one message into a dict of fields. Neither ever raises on bad input:
what cannot be parsed is reported as ``malformed`` with its raw text.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["FACILITIES", "SEVERITIES", "Framer", "Frame", "decode_line", "parse_line", "parse_text",
           "FIELDS"]

# The original RestMQ's names, kept so its consumers read the same values.
SEVERITIES = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
              "uucp", "cron", "authpriv", "ftp", "ntp", "audit", "alert", "at",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")

# Every message has every one of these keys (None when the line has no such part).
FIELDS = ("format", "pri", "facility", "severity", "timestamp", "hostname", "app", "procid",
          "msgid", "structured_data", "message", "malformed")

# A frame is (message bytes, truncated).
Frame = Tuple[bytes, bool]

# "<len> <" starts an octet-counted frame; the "<" (every syslog message starts
# with its PRI) keeps a newline-framed line that begins with digits from being
# taken for a length.
_OCTET_COUNT = re.compile(rb"([1-9][0-9]{0,8}) <")
_MAX_COUNT_PREFIX = 11  # nine digits, a space, the "<"

_PRI = re.compile(r"<([0-9]{1,3})>")
_RFC5424_START = re.compile(r"[1-9][0-9]{0,2} (?:- |[0-9]{4}-)")
_RFC5424 = re.compile(
    r"([1-9][0-9]{0,2}) (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32})(?: |\Z)", re.DOTALL)
_BSD_TIME = r"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_ISO_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
_RFC3164_HEADER = re.compile(r"(%s|%s) (?:([^\s\[\]:]+) )?" % (_BSD_TIME, _ISO_TIME))
_TAG = re.compile(r"([^\s\[\]:]{1,64})(?:\[([^\]\s]{0,128})\])?:(?: |\Z)(.*)", re.DOTALL)
_SD_NAME = re.compile(r'[^\s="\]]{1,32}')
_SD_ESCAPE = re.compile(r"\\([\"\\\]])")


class Framer:
    """Cuts a TCP stream into syslog messages, octet-counted or newline-framed.

    Each frame's framing is recognised on its own (RFC 6587 section 3.4). A
    message longer than ``max_line`` is cut to ``max_line`` bytes and flagged
    truncated; the rest of it is skipped, never buffered, so a connection holds
    at most about ``max_line`` bytes plus one read.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversized octet-counted frame still to skip
        self._discarding = False  # skipping the rest of an oversized line

    def feed(self, data: bytes) -> List[Frame]:
        """The complete frames ``data`` finishes, in order."""
        self._buffer += data
        frames: List[Frame] = []
        buffer = self._buffer
        while buffer:
            if self._skip:
                dropped = min(self._skip, len(buffer))
                del buffer[:dropped]
                self._skip -= dropped
                continue
            if self._discarding:
                end = buffer.find(b"\n")
                if end < 0:
                    buffer.clear()
                    break
                del buffer[:end + 1]
                self._discarding = False
                continue
            if 0x31 <= buffer[0] <= 0x39:  # a digit: maybe "<len> <msg>"
                match = _OCTET_COUNT.match(buffer)
                if (match is None and len(buffer) < _MAX_COUNT_PREFIX
                        and buffer.lstrip(b"0123456789") in (b"", b" ")):
                    break  # the length prefix is still arriving
                if match is not None:
                    if not self._octet_frame(buffer, match, frames):
                        break
                    continue
            if not self._line_frame(buffer, frames):
                break
        return frames

    def _octet_frame(self, buffer: bytearray, match: "re.Match[bytes]", frames: List[Frame]) -> bool:
        length = int(match.group(1))
        start = match.end() - 1  # the "<" belongs to the message
        wanted = min(length, self.max_line)
        if len(buffer) - start < wanted:
            return False
        frames.append((bytes(buffer[start:start + wanted]), length > self.max_line))
        del buffer[:start + wanted]
        self._skip = length - wanted
        return True

    def _line_frame(self, buffer: bytearray, frames: List[Frame]) -> bool:
        end = buffer.find(b"\n", 0, self.max_line + 1)
        if end < 0:
            if len(buffer) <= self.max_line:
                return False
            frames.append((bytes(buffer[:self.max_line]), True))
            del buffer[:self.max_line]
            self._discarding = True
            return True
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        line = line.rstrip(b"\r\x00")
        if line:
            frames.append((line, False))
        return True

    def finish(self) -> List[Frame]:
        """What is left when the connection closes: a last line without its
        newline, or an octet-counted frame cut short (flagged truncated)."""
        if self._skip or self._discarding or not self._buffer:
            self._buffer.clear()
            return []
        rest = bytes(self._buffer)
        self._buffer.clear()
        match = _OCTET_COUNT.match(rest)
        if match is not None:
            return [(rest[match.end() - 1:], True)]
        rest = rest.rstrip(b"\r\x00")
        return [(rest, False)] if rest else []


def _nil(value: str) -> Optional[str]:
    return None if value == "-" else value


def _empty_fields(text: str) -> Dict[str, Any]:
    fields: Dict[str, Any] = dict.fromkeys(FIELDS)
    fields["message"] = text
    fields["malformed"] = False
    return fields


def decode_line(raw: bytes) -> str:
    """The text of a syslog message; bytes that are not UTF-8 become ``\\xNN`` escapes."""
    return raw.decode("utf-8", "backslashreplace")


def parse_line(raw: bytes) -> Dict[str, Any]:
    """Parse one syslog message (RFC 5424, else RFC 3164) into ``FIELDS``.

    A message without a valid ``<PRI>``, or with a broken RFC 5424 header or
    structured data, comes back with ``malformed`` True, an ``error`` saying
    why, and as much as could be read (``message`` is then the raw text).
    """
    return parse_text(decode_line(raw))


def parse_text(text: str) -> Dict[str, Any]:
    """``parse_line`` of a message already decoded with ``decode_line``."""
    fields = _empty_fields(text)
    pri_match = _PRI.match(text)
    if pri_match is None:
        return _malformed(fields, "no <PRI> at the start")
    pri = int(pri_match.group(1))
    if pri > 191:
        return _malformed(fields, "PRI %d is over 191" % pri)
    fields["pri"] = pri
    fields["facility"] = FACILITIES[pri >> 3]
    fields["severity"] = SEVERITIES[pri & 7]
    rest = text[pri_match.end():]
    if _RFC5424_START.match(rest):
        return _parse_rfc5424(fields, rest)
    return _parse_rfc3164(fields, rest)


def _malformed(fields: Dict[str, Any], error: str) -> Dict[str, Any]:
    fields["malformed"] = True
    fields["error"] = error
    return fields


def _parse_rfc3164(fields: Dict[str, Any], rest: str) -> Dict[str, Any]:
    """BSD syslog is best effort (RFC 3164 section 4.3): whatever header is
    there is read; a message without timestamp or tag is still well formed."""
    fields["format"] = "rfc3164"
    header = _RFC3164_HEADER.match(rest)
    if header is not None:
        fields["timestamp"] = header.group(1)
        fields["hostname"] = header.group(2)
        content = rest[header.end():]
    else:
        content = rest
    tag = _TAG.match(content)
    if tag is not None:
        fields["app"], fields["procid"], content = tag.group(1), tag.group(2), tag.group(3)
    fields["message"] = content
    return fields


def _parse_rfc5424(fields: Dict[str, Any], rest: str) -> Dict[str, Any]:
    fields["format"] = "rfc5424"
    header = _RFC5424.match(rest)
    if header is None:
        return _malformed(fields, "incomplete RFC 5424 header")
    version, timestamp, hostname, app, procid, msgid = header.groups()
    if version != "1":
        fields["version"] = int(version)
    fields["timestamp"] = _nil(timestamp)
    fields["hostname"] = _nil(hostname)
    fields["app"] = _nil(app)
    fields["procid"] = _nil(procid)
    fields["msgid"] = _nil(msgid)
    body = rest[header.end():]
    if body.startswith("-"):
        message = body[1:]
        if message[:1] not in ("", " "):
            return _malformed(fields, "no space after the structured data")
    elif body.startswith("["):
        parsed = _structured_data(body)
        if parsed is None:
            return _malformed(fields, "malformed structured data")
        fields["structured_data"], message = parsed
    elif body == "":
        message = ""
    else:
        return _malformed(fields, "structured data must be '-' or start with '['")
    message = message[1:] if message.startswith(" ") else message
    fields["message"] = message[1:] if message.startswith("\ufeff") else message
    return fields


def _structured_data(text: str) -> Optional[Tuple[Dict[str, Dict[str, Any]], str]]:
    """``[id name="value" ...][id2 ...] rest`` -> ({id: {name: value}}, " rest").

    A parameter repeated within one element becomes a list of its values.
    None when the text is not valid structured data.
    """
    elements: Dict[str, Dict[str, Any]] = {}
    pos = 0
    while pos < len(text) and text[pos] == "[":
        name = _SD_NAME.match(text, pos + 1)
        if name is None:
            return None
        params: Dict[str, Any] = elements.setdefault(name.group(0), {})
        pos = name.end()
        while pos < len(text) and text[pos] == " ":
            param = _SD_NAME.match(text, pos + 1)
            if param is None or text[param.end():param.end() + 2] != '="':
                return None
            value, pos = _sd_value(text, param.end() + 2)
            if value is None:
                return None
            key = param.group(0)
            if key in params:
                previous = params[key]
                params[key] = (previous if isinstance(previous, list) else [previous]) + [value]
            else:
                params[key] = value
        if pos >= len(text) or text[pos] != "]":
            return None
        pos += 1
    if pos < len(text) and text[pos] != " ":
        return None
    return elements, text[pos:]


def _sd_value(text: str, start: int) -> Tuple[Optional[str], int]:
    """A PARAM-VALUE from just after its opening quote: (value, index after the closing quote)."""
    pos = start
    while True:
        quote = text.find('"', pos)
        if quote < 0:
            return None, len(text)
        backslashes = 0
        while quote - 1 - backslashes >= start and text[quote - 1 - backslashes] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            return _SD_ESCAPE.sub(r"\1", text[start:quote]), quote + 1
        pos = quote + 1
