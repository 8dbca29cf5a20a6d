"""What a hostile peer finds (issue 11): raw sockets against a real broker on a real Redis.

The denial-of-service tests assert on what the broker buffers (bytes it holds
for a connection), never on a time.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
import pytest_twisted
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

from tests.helpers import open_raw, raw_exchange, start_app, stop_app, test_config, wait_until
from tests.streaming import WsClient


def split_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def handshake(path: str, key: str, host: str = "127.0.0.1") -> bytes:
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % (path, host, key)).encode()


# item 10: RFC 6455 wants a base64-encoded 16-byte nonce

@pytest.mark.parametrize("key", ["not base64 at all!", base64.b64encode(b"x").decode(),
                                 base64.b64encode(os.urandom(7500)).decode(),
                                 base64.b64encode(os.urandom(17)).decode(), "dGhlIHNhbXBsZSBub25jZQ"])
@pytest_twisted.ensureDeferred
async def test_websocket_malformed_key_is_400(app, key):
    raw = await raw_exchange(app.port, handshake("/ws/keys", key), stop_at=b"}")
    status, _, body = split_response(raw)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_websocket_proper_key_is_101(app):
    raw = await raw_exchange(app.port, handshake("/ws/keys", base64.b64encode(os.urandom(16)).decode()),
                             stop_at=b"\r\n\r\n")
    assert split_response(raw)[0] == 101
