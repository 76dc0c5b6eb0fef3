"""threadstore: conversation threads for MCP servers and LLM applications that outlive a call,
a process, a restart or a machine. Memory, SQLite and Redis backends behind one contract."""

from __future__ import annotations

from ._config import Settings, load_settings
from ._errors import (
    ConfigError,
    CorruptData,
    InvalidInput,
    InvalidThreadId,
    StorageUnavailable,
    ThreadFull,
    ThreadNotFound,
    ThreadstoreError,
    WrongType,
)
from ._factory import get_storage_backend, open_storage, reset_storage_backend
from ._history import TokenCounter, estimate_tokens
from ._memory import MemoryStorage
from ._models import History, Thread, ThreadPage, ThreadSummary, Turn
from ._sqlite import SQLiteStorage
from ._storage import APPEND_FULL, APPEND_MISSING, Storage
from ._threads import AsyncThreadStore, ThreadStore

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # RedisStorage needs the optional redis extra, so it is imported on first use only.
    if name == "RedisStorage":
        from ._redis import RedisStorage

        return RedisStorage
    raise AttributeError(f"module 'threadstore' has no attribute {name!r}")


__all__ = [
    "APPEND_FULL",
    "APPEND_MISSING",
    "AsyncThreadStore",
    "ConfigError",
    "CorruptData",
    "History",
    "InvalidInput",
    "InvalidThreadId",
    "MemoryStorage",
    "SQLiteStorage",
    "Settings",
    "Storage",
    "StorageUnavailable",
    "Thread",
    "ThreadFull",
    "ThreadNotFound",
    "ThreadPage",
    "ThreadStore",
    "ThreadSummary",
    "ThreadstoreError",
    "TokenCounter",
    "Turn",
    "WrongType",
    "__version__",
    "estimate_tokens",
    "get_storage_backend",
    "load_settings",
    "open_storage",
    "reset_storage_backend",
]
