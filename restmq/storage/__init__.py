"""Redis behind one class: QueueStore, its Lua scripts, pool and pub/sub."""

from restmq.storage.store import QueueStore

__all__ = ["QueueStore"]
