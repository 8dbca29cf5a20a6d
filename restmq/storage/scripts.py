"""The Lua scripts in lua/: loaded once, called by EVALSHA, reloaded on NOSCRIPT.

Every script is ``lib.lua`` (shared helpers) followed by the script's own file,
whose header states its KEYS, ARGV and reply.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Dict, Sequence

import txredisapi

__all__ = ["Script", "load_scripts", "SCRIPT_NAMES"]

SCRIPT_NAMES = ("add", "take", "dispatch", "peek", "delete", "purge_start", "purge_chunk", "status",
                "stats", "jobs", "history", "requeue", "ack", "nack", "extend", "redrive", "settings",
                "take_first", "group_create", "group_delete", "group_check", "reply", "collect",
                "browse")


class Script:
    """One Lua script, called by SHA with a fallback to EVAL when Redis lost it."""

    def __init__(self, name: str, source: bytes) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source).hexdigest()

    def __call__(self, connection: Any, keys: Sequence[Any], args: Sequence[Any]):
        """Run on a txredisapi connection; resolves to the script's reply."""
        count = len(keys)
        deferred = connection.execute_command("EVALSHA", self.sha, count, *keys, *args)
        deferred.addErrback(self._reload, connection, keys, args)
        return deferred

    def _reload(self, failure, connection, keys, args):
        failure.trap(txredisapi.ResponseError)
        if not str(failure.value).startswith("NOSCRIPT"):
            return failure
        # EVAL both runs the script and caches it under the same SHA
        return connection.execute_command("EVAL", self.source, len(keys), *keys, *args)


def _read(name: str) -> bytes:
    return resources.files("restmq.storage").joinpath("lua", name).read_bytes()


def load_scripts(names: Sequence[str] = SCRIPT_NAMES,
                 libs: Sequence[str] = ("lib",)) -> Dict[str, Script]:
    """Read the scripts ``names`` of lua/ once, each prefixed with the ``libs``
    (lib.lua; the SQS scripts add sqs_lib.lua)."""
    lib = b"\n".join(_read(name + ".lua") for name in libs)
    scripts = {}
    for name in names:
        try:
            body = _read(name + ".lua")
        except FileNotFoundError:
            continue
        scripts[name] = Script(name, lib + b"\n" + body)
    return scripts
