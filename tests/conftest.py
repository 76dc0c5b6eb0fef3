"""Shared fixtures. A real redis-server is started by the tests themselves on a free loopback
port. Without the binary the Redis tests are skipped with the reason shown, unless
THREADSTORE_REQUIRE_REDIS=1 (set by CI), which turns that skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadstore
from threadstore.testing import RedisServer, redis_binary


def _need_redis() -> None:
    if redis_binary() is None:
        reason = "redis-server not installed (apt-get install redis-server)"
        if os.environ.get("THREADSTORE_REQUIRE_REDIS") == "1":
            pytest.fail(f"THREADSTORE_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the whole run; tests that stop or pause a server use their own."""
    _need_redis()
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private server that the test may stop, restart or pause."""
    _need_redis()
    server = RedisServer().start()
    yield server
    server.cleanup()


def backend_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A fresh, empty store URL of the given kind: "memory", "sqlite" (a file) or "redis"."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/threads.db"
    return str(request.getfixturevalue("redis_url"))


ALL_BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
SHARED_BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=ALL_BACKENDS)
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn (memory, SQLite file, Redis)."""
    return backend_url(request, request.param, tmp_path)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The backends several processes can share (SQLite file, Redis)."""
    return backend_url(request, request.param, tmp_path)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no threadstore settings and no singleton."""
    for var in (
        "THREADSTORE_URL",
        "REDIS_URL",
        "CONVERSATION_TIMEOUT_HOURS",
        "MAX_CONVERSATION_TURNS",
        "THREADSTORE_NAMESPACE",
        "THREADSTORE_FALLBACK",
        "THREADSTORE_AUTH_TOKEN",
        "THREADSTORE_AUTH_TOKENS_FILE",
        "THREADSTORE_OAUTH_ISSUER",
        "THREADSTORE_OAUTH_AUDIENCE",
        "THREADSTORE_OAUTH_JWKS",
        "THREADSTORE_OAUTH_ADMIN_SCOPE",
        "THREADSTORE_OAUTH_RESOURCE",
    ):
        monkeypatch.delenv(var, raising=False)
    yield
    threadstore.reset_storage_backend()
