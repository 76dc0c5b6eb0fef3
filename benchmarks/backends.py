"""threadstore's own subjects, opened through the public API, and the Redis server they share.

Every function raises NotAvailable (reported as "n/a: <reason>") when a part has not landed yet
or a binary is missing, so the workloads light up by themselves once it lands.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import threadstore
from threadstore import MemoryStorage, Storage

from .harness import NotAvailable

NAMESPACE = "bench"
TTL = 3 * 3600.0


def open_memory(**kwargs: Any) -> MemoryStorage:
    return MemoryStorage(namespace=NAMESPACE, **kwargs)


def _open(url: str, kind: str) -> Storage:
    try:
        store = threadstore.open_storage(url, namespace=NAMESPACE, fallback="fail")
    except threadstore.ConfigError as exc:
        raise NotAvailable(f"threadstore {kind} backend: {exc}") from None
    if store.kind != kind:  # never measure a fallback by mistake
        store.close()
        raise NotAvailable(f"open_storage({url!r}) gave a {store.kind} store")
    return store


def open_sqlite(path: Path) -> Storage:
    return _open(f"sqlite:///{path}", "sqlite")


def open_redis(url: str) -> Storage:
    return _open(url, "redis")


def thread_store_class(name: str = "ThreadStore") -> Any:
    cls = getattr(threadstore, name, None)
    if cls is None:
        raise NotAvailable(f"threadstore.{name} has not landed yet")
    return cls


def thread_store(storage: Storage, **kwargs: Any) -> Any:
    """``threadstore.ThreadStore(storage, ...)``, or NotAvailable before it lands."""
    return thread_store_class("ThreadStore")(storage, **kwargs)


def async_thread_store(storage: Storage, **kwargs: Any) -> Any:
    return thread_store_class("AsyncThreadStore")(storage, **kwargs)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    from threadstore.testing import RedisServer, redis_binary

    if redis_binary() is None:
        raise NotAvailable("redis-server not installed")
    try:
        import redis  # noqa: F401
    except ModuleNotFoundError:
        raise NotAvailable("redis-py not installed (pip install 'threadstore[bench]')") from None
    with RedisServer() as server:
        yield server.url


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"threadstore-bench-{prefix}-") as d:
        yield Path(d)


class RoundTrips:
    """Counts client round trips to Redis: each ``send_packed_command`` is one request written to
    the socket (a pipeline is one), for both the sync and the asyncio clients of redis-py.

    Server-side ``total_commands_processed`` also counts the commands a Lua script runs, so it
    measures work, not round trips; both are reported.
    """

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> RoundTrips:
        import redis.asyncio.connection as aconn
        import redis.connection as conn

        counter = self

        sync_cls = conn.AbstractConnection
        sync_orig = sync_cls.send_packed_command

        def sync_send(self: Any, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            sync_orig(self, command, check_health)

        async_cls = aconn.AbstractConnection
        async_orig = async_cls.send_packed_command

        async def async_send(self: Any, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            await async_orig(self, command, check_health)

        sync_cls.send_packed_command = sync_send  # type: ignore[method-assign]
        async_cls.send_packed_command = async_send  # type: ignore[method-assign]

        def undo() -> None:
            sync_cls.send_packed_command = sync_orig  # type: ignore[method-assign]
            async_cls.send_packed_command = async_orig  # type: ignore[method-assign]

        self._undo.append(undo)
        return self

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            self._undo.pop()()


def server_commands(url: str) -> int:
    """Redis' total_commands_processed (each call to this adds one: the INFO itself)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def per_call(url: str, fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(client round trips, server commands) per call of ``fn``, averaged over ``calls`` calls."""
    before = server_commands(url)
    with RoundTrips() as trips:
        for _ in range(calls):
            fn()
    after = server_commands(url)
    return trips.count / calls, (after - before - 1) / calls
