"""Schemathesis hooks of tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import json

import schemathesis


@schemathesis.check
def no_server_error_but_a_deliberate_503(ctx, response, case):
    """Any 5xx fails, except 503 ``backend_unavailable``: RestMQ's word for "Redis is
    away", and 504 ``timeout``: no worker answered a /rpc request in time."""
    if response.status_code < 500:
        return None
    deliberate = {503: "backend_unavailable", 504: "timeout"}
    if response.status_code in deliberate:
        try:
            if json.loads(response.text)["error"]["code"] == deliberate[response.status_code]:
                return None
        except (ValueError, KeyError, TypeError):
            pass
    raise AssertionError("server error %d: %s" % (response.status_code, response.text[:500]))
