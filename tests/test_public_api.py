"""The public names other projects rely on (DESIGN.md) stay importable from the package."""

from __future__ import annotations

import threadstore

STORAGE_NAMES = {
    "ThreadStore",
    "AsyncThreadStore",
    "Thread",
    "Turn",
    "History",
    "MemoryStorage",
    "SQLiteStorage",
    "get_storage_backend",
    "reset_storage_backend",
    "open_storage",
    "ThreadstoreError",
    "InvalidThreadId",
    "ThreadNotFound",
    "ThreadFull",
    "InvalidInput",
    "StorageUnavailable",
    "ConfigError",
}


def test_public_names_are_exported() -> None:
    missing = {n for n in STORAGE_NAMES if not hasattr(threadstore, n)}
    assert missing == set()
    assert set(threadstore.__all__) >= STORAGE_NAMES


def test_every_error_derives_from_the_root() -> None:
    for name in threadstore.__all__:
        obj = getattr(threadstore, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, threadstore.ThreadstoreError), name


def test_seed_methods_exist_on_every_backend_class() -> None:
    for method in ("get", "set_with_ttl", "setex", "shutdown"):
        assert callable(getattr(threadstore.Storage, method))


def test_redis_storage_is_importable_lazily() -> None:
    from threadstore import RedisStorage

    assert RedisStorage.kind == "redis"
    assert issubclass(RedisStorage, threadstore.Storage)
