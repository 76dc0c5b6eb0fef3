"""Issue 11 item 3: every Redis call has an overall deadline.

A real redis-server behind a loopback TCP proxy that, once switched to slow mode, passes the
server's replies on one byte at a time with a pause between bytes. Each pause is well under
socket_timeout, so only an overall deadline can stop the call; past it the call raises
StorageUnavailable and the connection is dropped (the proxy sees the client hang up).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from threadstore import StorageUnavailable
from threadstore._redis import DEFAULT_DEADLINE, RedisStorage
from threadstore.testing import RedisServer, wait_until

pytestmark = pytest.mark.redis


class TrickleProxy:
    """Forwards loopback TCP to ``upstream``; in slow mode, replies go one byte per ``pause``."""

    def __init__(self, upstream_port: int, pause: float = 0.25) -> None:
        self.upstream_port = upstream_port
        self.pause = pause
        self.slow = threading.Event()
        self.open_clients = 0
        self.closed_clients = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self.open_clients += 1
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to server, at full speed; counts the client hanging up."""
        try:
            while data := client.recv(65536):
                upstream.sendall(data)
        except OSError:
            pass
        with self._lock:
            self.open_clients -= 1
            self.closed_clients += 1
        for s in (upstream, client):
            s.close()

    def _down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                if not self.slow.is_set():
                    client.sendall(data)
                    continue
                for i in range(len(data)):
                    client.sendall(data[i : i + 1])
                    time.sleep(self.pause)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TrickleProxy]:
    p = TrickleProxy(redis_server.port)
    yield p
    p.close()


@pytest.fixture
def value(redis_url: str) -> str:
    """200 bytes under ns:k, written directly: at one byte per 0.25 s the reply takes 50 s."""
    text = "v" * 200
    client = redis.Redis.from_url(redis_url)
    client.set("ns:k", text)
    client.close()
    return text


def _url(proxy: TrickleProxy, deadline: float) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0?deadline={deadline}&socket_timeout=2"


def test_default_deadline_is_a_few_seconds() -> None:
    assert 1 <= DEFAULT_DEADLINE <= 10
    store = RedisStorage.from_url("redis://127.0.0.1:1/0", namespace="ns", check=False)
    assert store.stats()["deadline"] == DEFAULT_DEADLINE
    store.close()


def test_a_trickling_link_is_cut_at_the_deadline(proxy: TrickleProxy, value: str) -> None:
    store = RedisStorage.from_url(_url(proxy, 1.0), namespace="ns", check=False)
    try:
        assert store.get("k") == value  # fast mode: the connection is made and pooled
        assert proxy.open_clients == 1
        proxy.slow.set()
        with pytest.raises(StorageUnavailable, match="1 s deadline") as info:
            store.get("k")
        assert "dropped" in str(info.value)
        # The connection was discarded, not returned to the pool half-read.
        wait_until("the store to hang up", lambda: proxy.closed_clients == 1, 30)
        proxy.slow.clear()
        assert store.get("k") == value  # a fresh connection works at once
        assert store.stats()["errors"] == 1
    finally:
        store.close()


def test_a_trickling_link_is_cut_at_the_deadline_async(proxy: TrickleProxy, value: str) -> None:
    store = RedisStorage.from_url(_url(proxy, 1.0), namespace="ns", check=False)

    async def main() -> None:
        assert await store.aio.call("get", "k") == value
        proxy.slow.set()
        with pytest.raises(StorageUnavailable, match="1 s deadline"):
            await store.aio.call("get", "k")
        proxy.slow.clear()
        assert await store.aio.call("get", "k") == value
        await store.aclose()

    try:
        asyncio.run(main())
        wait_until("the async client to hang up", lambda: proxy.open_clients == 0, 30)
    finally:
        store.close()


def test_a_slow_write_is_cut_too_and_never_resent(proxy: TrickleProxy, redis_url: str) -> None:
    """An append whose reply trickles is cut at the deadline; it ran once on the server (the
    caller is told it may have happened) and is not sent again."""
    store = RedisStorage.from_url(_url(proxy, 1.0), namespace="ns", check=False)
    try:
        assert store.list_create("l", 60, "meta")
        # The reply is ":3\r\n" (4 bytes, 1 s): with a 0.5 s deadline it cannot complete.
        slow = RedisStorage.from_url(_url(proxy, 0.5), namespace="ns", check=False)
        assert slow.list_append("l", "t1", max_items=10, ttl_seconds=60) == 2  # script cached
        proxy.slow.set()
        with pytest.raises(StorageUnavailable, match="deadline"):
            slow.list_append("l", "turn", max_items=10, ttl_seconds=60)
        slow.close()
        proxy.slow.clear()
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        assert client.lrange("ns:l", 0, -1) == ["meta", "t1", "turn"]
        client.close()
    finally:
        store.close()


def test_bad_deadlines_are_config_errors() -> None:
    from threadstore import ConfigError

    for bad in ("0", "-1", "nan", "soon", "100000"):
        with pytest.raises(ConfigError, match="deadline"):
            RedisStorage.from_url(f"redis://h/0?deadline={bad}", namespace="ns", check=False)


def test_a_listing_page_is_cut_at_one_deadline(proxy: TrickleProxy) -> None:
    """list_ends_many sends a page in one pipeline: a trickling link cuts it at the call's
    deadline once (one error), never once more per thread one by one. Sync and async."""
    store = RedisStorage.from_url(_url(proxy, 0.5), namespace="ns", check=False)
    keys = [f"l{i}" for i in range(10)]
    try:
        for key in keys:
            store.list_create(key, 60, "meta " * 20)
        assert len(store.list_ends_many(keys)) == 10  # fast: scripts cached, pool warm
        proxy.slow.set()
        with pytest.raises(StorageUnavailable, match="deadline"):
            store.list_ends_many(keys)
        assert store.stats()["errors"] == 1

        async def main() -> None:
            proxy.slow.clear()
            assert len(await store.aio.call("list_ends_many", keys)) == 10
            proxy.slow.set()
            with pytest.raises(StorageUnavailable, match="deadline"):
                await store.aio.call("list_ends_many", keys)
            await store.aclose()

        asyncio.run(main())
        assert store.stats()["errors"] == 2
    finally:
        proxy.slow.clear()
        store.close()
