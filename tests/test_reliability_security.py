"""Security: no password leaks, namespace isolation, private files, HTTP authentication.

- A Redis password (in the URL's userinfo or its query) never appears in captured logs,
  exception messages (the whole chain), repr/str/url/stats of the store or the ThreadStore, nor
  in any output of the command line, for a reachable server, a wrong password and an
  unreachable server, with and without --debug.
- Two namespaces in one SQLite file or on one Redis server never see, change or delete each
  other's keys or threads.
- The SQLite file and its -wal/-shm companions are 0600, created directories 0700, even under
  umask 000.
- The HTTP server refuses requests without the bearer token (and with a wrong one, and with a
  foreign Host header) and serves the official MCP client that sends it.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from reliability_workers.figures import record
from reliability_workers.http_server import http_server
from threadstore import (
    ConfigError,
    StorageUnavailable,
    ThreadNotFound,
    ThreadStore,
    ThreadstoreError,
    open_storage,
)
from threadstore.testing import RedisServer, free_port

SECRET = "s3cr3t-pw"


def _chain(exc: BaseException) -> str:
    """Every message and repr in an exception's cause/context chain."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture
def secret_redis() -> Iterator[RedisServer]:
    from threadstore.testing import redis_binary

    if redis_binary() is None:
        if os.environ.get("THREADSTORE_REQUIRE_REDIS") == "1":
            pytest.fail("THREADSTORE_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server not installed")
    server = RedisServer(password=SECRET).start()
    yield server
    server.cleanup()


def _urls(server: RedisServer) -> dict[str, str]:
    dead = free_port()
    return {
        "userinfo": server.url,
        "user and password": f"redis://default:{SECRET}@127.0.0.1:{server.port}/0",
        "query": f"redis://127.0.0.1:{server.port}/0?password={SECRET}",
        "wrong password": f"redis://:{SECRET}-wrong@127.0.0.1:{server.port}/0",
        "unreachable": f"redis://:{SECRET}@127.0.0.1:{dead}/0",
        "unreachable query": f"redis://127.0.0.1:{dead}/0?password={SECRET}",
    }


@pytest.mark.redis
def test_redis_password_never_leaks_from_the_library(
    secret_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    surfaces = 0
    texts: list[str] = []
    for url in _urls(secret_redis).values():
        for fallback in ("fail", "memory"):
            try:
                storage = open_storage(url, fallback=fallback)  # type: ignore[arg-type]
            except (ConfigError, StorageUnavailable) as exc:  # anything else fails the test
                texts.append(_chain(exc))
                surfaces += 1
                continue
            store = ThreadStore(storage, ttl_seconds=60, max_turns=5)
            texts += [repr(storage), str(storage), storage.url, repr(store), str(storage.stats())]
            surfaces += 5
            if storage.kind == "redis":
                tid = store.create_thread("chat")
                store.add_turn(tid, "user", "x")
            storage.close()
            texts.append(str(storage.stats()))
            try:
                storage.get("k")
            except ThreadstoreError as exc:
                texts.append(_chain(exc))
                surfaces += 1
    # a store whose server goes away mid-run
    storage = open_storage(secret_redis.url, fallback="fail")
    secret_redis.stop()
    for call in (
        lambda: storage.get("k"),
        lambda: storage.list_append("k", "v", max_items=3, ttl_seconds=9),
    ):
        with pytest.raises(StorageUnavailable) as info:
            call()
        texts.append(_chain(info.value))
        surfaces += 1
    texts.append(str(storage.stats()))
    storage.close()
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    leaks = [t for t in texts if SECRET in t]
    assert not leaks, leaks[:3]
    assert any("***" in t for t in texts), "the redacted URLs were not shown at all"
    record(
        "security password redaction (library)",
        urls=len(_urls(secret_redis)),
        surfaces_checked=surfaces + len(caplog.records),
        leaks=0,
    )


@pytest.mark.redis
def test_redis_password_never_leaks_from_the_cli(secret_redis: RedisServer, tmp_path: Path) -> None:
    urls = _urls(secret_redis)
    runs = [
        (url, args, False)
        for name, url in urls.items()
        if name != "user and password" and name != "unreachable query"
        for args in (["--debug", "stats", "--json"], ["doctor"])
    ]
    runs += [(urls["userinfo"], ["list"], True), (urls["unreachable"], ["stats"], True)]
    for url, args, via_env in runs:
        env = {**os.environ, "HOME": str(tmp_path)}
        argv = [sys.executable, "-m", "threadstore.cli"]
        if via_env:
            env["THREADSTORE_URL"] = url
        else:
            argv += ["--url", url]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=60)
        output = done.stdout + done.stderr
        assert SECRET not in output, (url, args, via_env, output[:500])
        assert "Traceback" not in output or "--debug" in args, (args, output[:800])
    record("security password redaction (CLI)", cli_runs=len(runs), leaks=0)


# -- namespaces -------------------------------------------------------------------------------
def _isolation(url: str) -> int:
    a = open_storage(url, namespace="team", fallback="fail")
    b = open_storage(url, namespace="team2", fallback="fail")
    c = open_storage(url, namespace="team.x", fallback="fail")
    checks = 0
    for s, v in ((a, "A"), (b, "B"), (c, "C")):
        s.set_with_ttl("k", 60, v)
        s.list_create("l", 60, v)
    for s, v in ((a, "A"), (b, "B"), (c, "C")):
        assert s.get("k") == v
        assert s.list_range("l") == [v]
        assert sorted(s.scan()) == ["k", "l"]
        checks += 3
    assert a.delete("k") is True
    assert b.get("k") == "B" and c.get("k") == "C"
    assert a.list_append("l", "a2", max_items=5, ttl_seconds=60) == 2
    assert b.list_range("l") == ["B"]
    ta, tb = (
        ThreadStore(a, ttl_seconds=60, max_turns=5),
        ThreadStore(b, ttl_seconds=60, max_turns=5),
    )
    tid = tb.create_thread("chat")
    tb.add_turn(tid, "user", "private")
    assert ta.get_thread(tid) is None
    with pytest.raises(ThreadNotFound):
        ta.add_turn(tid, "user", "intruder")
    assert ta.delete_thread(tid) is False
    assert [t.thread_id for t in ta.list_threads().threads] == []
    thread = tb.get_thread(tid)
    assert thread is not None and [t.content for t in thread.turns] == ["private"]
    checks += 7
    for s in (a, b, c):
        s.close()
    return checks


def test_sqlite_namespaces_are_isolated(tmp_path: Path) -> None:
    checks = _isolation(f"sqlite:///{tmp_path}/shared.db")
    record("security namespace isolation sqlite", checks=checks, leaks=0)


@pytest.mark.redis
def test_redis_namespaces_are_isolated(redis_url: str) -> None:
    import redis

    checks = _isolation(redis_url)
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = sorted(raw.scan_iter(count=1000))
    raw.close()
    assert all(k.split(":", 1)[0] in ("team", "team2", "team.x") for k in keys), keys
    record("security namespace isolation redis", checks=checks, leaks=0)


# -- file modes -------------------------------------------------------------------------------
def test_sqlite_files_are_private_even_under_umask_000(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "threads.db"
    code = (
        "import os, sys; os.umask(0);"
        "from threadstore import open_storage, ThreadStore;"
        "s = open_storage(sys.argv[1], fallback='fail');"
        "t = ThreadStore(s, ttl_seconds=60, max_turns=5);"
        "t.add_turn(t.create_thread('chat'), 'user', 'x');"
        "import time; print('ok', flush=True); time.sleep(0.3); s.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"sqlite:///{target}"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ok"
    modes: dict[str, int] = {}
    for path in target.parent.iterdir():  # while open: -wal and -shm exist
        modes[path.name] = stat.S_IMODE(path.stat().st_mode)
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert modes["threads.db"] == 0o600
    for name, mode in modes.items():
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}"
    for directory in (target.parent, target.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    record("security sqlite file modes", files={k: oct(v) for k, v in sorted(modes.items())})


# -- HTTP authentication -----------------------------------------------------------------------
TOKEN = "tok-" + "x" * 40


def _status(endpoint: str, headers: dict[str, str]) -> int:
    import httpx2

    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    base = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx2.Client(timeout=10) as client:
        return client.post(endpoint, json=body, headers={**base, **headers}).status_code


def test_http_requires_the_bearer_token() -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    with http_server("memory://", env={"THREADSTORE_AUTH_TOKEN": TOKEN}) as server:
        refused = {
            "no header": _status(server.endpoint, {}),
            "wrong token": _status(server.endpoint, {"authorization": "Bearer nope"}),
            "token prefix": _status(server.endpoint, {"authorization": f"Bearer {TOKEN[:-1]}"}),
            "basic scheme": _status(server.endpoint, {"authorization": f"Basic {TOKEN}"}),
            "empty bearer": _status(server.endpoint, {"authorization": "Bearer"}),
        }
        assert set(refused.values()) == {401}, refused
        foreign_host = _status(
            server.endpoint, {"authorization": f"Bearer {TOKEN}", "host": "evil.example:80"}
        )
        assert foreign_host in (400, 403, 421), foreign_host

        async def main() -> Any:
            http = httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
            async with http, Client(streamable_http_client(server.endpoint, http_client=http)) as c:
                created = await c.call_tool("thread_create", {"tool_name": "auth"})
                assert not created.is_error
                return created.structured_content

        created = anyio.run(main)
        assert created["thread_id"]
        server.proc.terminate()
        server.proc.wait(timeout=10)
        assert TOKEN not in server.output()
    record(
        "security http bearer auth",
        refused_requests=len(refused) + 1,
        statuses=sorted(set(refused.values()) | {foreign_host}),
        authorized_client_ok=True,
    )


def test_http_refuses_unsafe_listen_options(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("THREADSTORE_AUTH_TOKEN", None)
    base = [sys.executable, "-m", "threadstore.cli", "--url", "memory://", "serve", "-t", "http"]
    for extra in (["--host", "0.0.0.0"], ["--host", "0.0.0.0", "--allow-remote"]):
        done = subprocess.run(
            [*base, *extra, "--port", str(free_port())],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert done.returncode == 2, (extra, done.stderr)
        assert "THREADSTORE_AUTH_TOKEN" in done.stderr or "allow-remote" in done.stderr
