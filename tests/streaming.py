"""Raw-socket streaming clients for the tests: COMET, SSE and WebSocket."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage

from tests.helpers import open_raw, wait_until


def dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0 or len(rest) < size + 2:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return out


class Stream:
    """A GET held open over a raw connection; what arrived is parsed on demand."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    async def open(cls, port: int, path: str, headers: Optional[Dict[str, str]] = None,
                   http10: bool = False, wait_head: bool = True) -> "Stream":
        client = await open_raw(port)
        lines = ["GET %s HTTP/%s" % (path, "1.0" if http10 else "1.1"), "Host: 127.0.0.1"]
        lines += ["%s: %s" % item for item in (headers or {}).items()]
        client.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        stream = cls(client)
        if wait_head:
            await wait_until(lambda: b"\r\n\r\n" in client.data or stream.closed)
        return stream

    @property
    def closed(self) -> bool:
        return self.client.closed.called

    @property
    def head(self) -> bytes:
        return self.client.data.partition(b"\r\n\r\n")[0]

    @property
    def status(self) -> int:
        return int(self.head.split(b" ")[1])

    @property
    def body(self) -> bytes:
        raw = self.client.data.partition(b"\r\n\r\n")[2]
        if b"transfer-encoding: chunked" in self.head.lower():
            return dechunk(raw)
        return raw

    def lines(self) -> List[Any]:
        return [json.loads(line) for line in self.body.split(b"\r\n") if line.strip()]

    def events(self) -> List[Dict[str, str]]:
        events = []
        for block in self.body.decode().split("\n\n"):
            fields: Dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":") or not line:
                    if line.startswith(":"):
                        fields.setdefault("comment", line)
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if fields:
                events.append(fields)
        return events

    def messages(self) -> List[Dict[str, Any]]:
        """The data of the message events (SSE)."""
        return [json.loads(e["data"]) for e in self.events() if "data" in e and "event" not in e]

    def close(self) -> None:
        self.client.transport.loseConnection()


class WsClient:
    """A WebSocket client on wsproto over a raw connection."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.received: List[str] = []
        self.accepted = False
        self.rejected: Optional[int] = None
        self.closed_by_server = False
        self._fed = 0

    @classmethod
    async def open(cls, port: int, path: str, origin: Optional[str] = None,
                   headers: Optional[List[tuple]] = None) -> "WsClient":
        client = await open_raw(port)
        ws = cls(client)
        extra = list(headers or [])
        if origin:
            extra.append((b"Origin", origin.encode()))
        client.transport.write(ws.ws.send(Request(host="127.0.0.1:%d" % port, target=path,
                                                  extra_headers=extra)))
        await wait_until(lambda: ws.poll() or ws.accepted or ws.rejected is not None or client.closed.called)
        return ws

    def poll(self) -> bool:
        data = self.client.data[self._fed:]
        self._fed = len(self.client.data)
        if data:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.accepted = True
                elif isinstance(event, RejectConnection):
                    self.rejected = event.status_code
                elif isinstance(event, TextMessage):
                    self.received.append(event.data)
                elif isinstance(event, Ping):
                    self.client.transport.write(self.ws.send(event.response()))
                    self.received.append("<ping>")
                elif isinstance(event, CloseConnection):
                    self.closed_by_server = True
        return False

    def messages(self) -> List[Any]:
        self.poll()
        return [json.loads(text) for text in self.received if text != "<ping>"]

    def send_text(self, text: str) -> None:
        self.client.transport.write(self.ws.send(TextMessage(data=text)))

    def close(self) -> None:
        self.client.transport.loseConnection()
