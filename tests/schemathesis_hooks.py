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


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Speak the JSON dialect (``Accept: application/json``, as restmq.client does):
    its statuses are the contract checked here. The original's dialect (no such
    Accept: 200 with {"error": ...} for the JSON protocol's refusals, text lines)
    is held to what the original answered by tests/test_original.py instead."""
    if case.headers is None:
        case.headers = {}
    if not any(name.lower() == "accept" for name in case.headers):
        case.headers["Accept"] = "application/json"
