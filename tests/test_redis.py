"""The Redis backend against real redis-server processes started by the tests (no fakes)."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

import threadstore
from contract import StorageContract
from threadstore import (
    AsyncThreadStore,
    ConfigError,
    CorruptData,
    InvalidInput,
    MemoryStorage,
    Storage,
    StorageUnavailable,
    ThreadStore,
    WrongType,
)
from threadstore._redis import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_SOCKET_TIMEOUT,
    Commands,
    RedisStorage,
)
from threadstore.testing import RedisServer, free_port, redis_binary

pytestmark = pytest.mark.redis

WORKER = Path(__file__).parent / "redis_workers" / "append_worker.py"
PASSWORD = "hunter2-s3cr3t"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStorage]:
    s = RedisStorage.from_url(redis_url, namespace="test")
    yield s
    s.close()


def _commands(raw: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT."""
    stats: dict[str, dict[str, int]] = raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text


class TestRedisContract(StorageContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[Storage]:
        s = threadstore.open_storage(redis_url, namespace="test", fallback="fail")
        assert isinstance(s, RedisStorage)
        yield s
        s.close()


# -- pure parts: no server ----------------------------------------------------------------------
class TestCommands:
    def test_keys_carry_the_namespace_and_ttls_are_milliseconds(self) -> None:
        c = Commands("ns")
        assert c.get("k").args == ("GET", "ns:k")
        assert c.set_with_ttl("k", 1.5, "v").args == ("SET", "ns:k", "v", "PX", 1500)
        expire = c.expire("k", 0.001).args
        assert expire[0] == "EVALSHA" and expire[2:6] == (2, "ns:k", "ns:\x00m{ns#0}", 1)

    def test_index_layout_shares_a_hash_tag_with_the_list(self) -> None:
        """notes/index.md: with ``tagged`` a list, its membership hash and its scopes' sorted
        sets carry one hash tag (one Cluster slot); without, data keys keep their old names."""
        plain = Commands("ns")
        assert plain.key("thread:x") == "ns:thread:x"
        assert plain.index_names(0) == ("ns:\x00m{ns#0}", "ns:\x00a{ns#0}", "ns:\x00e{ns#0}")
        c = Commands("ns", partitions=16, tagged=True)
        part = c.partition("thread:x")
        assert 0 <= part < 16 and part == c.partition("thread:x")
        tag = "{ns#" + str(part) + "}"
        assert c.key("thread:x") == "ns:" + tag + "thread:x"
        create = c.list_create("thread:x", 60, "m", scopes=("threads", "owner:a"), score=5)
        n_keys = create.args[2]
        keys = create.args[3 : 3 + n_keys]
        assert n_keys == 6 and all(tag in k for k in keys)
        assert keys[2:] == (
            "ns:\x00a" + tag + "threads", "ns:\x00e" + tag + "threads",
            "ns:\x00a" + tag + "owner:a", "ns:\x00e" + tag + "owner:a",
        )  # fmt: skip
        assert len(c.index_page("threads", 10).cmds) == 16
        assert c.scan_match("thread:") == "ns:{ns#*}thread:*"
        page = c.scan_page(c.scan_match(), 0)
        assert page.parse((b"0", [b"ns:{ns#3}thread:y", b"ns:\x00m{ns#3}"])) == (0, ["thread:y"])
        with pytest.raises(ConfigError):
            Commands("ns", partitions=0)

    @pytest.mark.parametrize(
        ("start", "stop", "lrange"),
        [(0, None, (0, -1)), (2, None, (2, -1)), (0, 1, (0, 0)), (2, 4, (2, 3)), (3, 3, (1, 0)),
         (5, 0, (1, 0)), (0, 0, (1, 0))],
    )  # fmt: skip
    def test_list_range_translates_python_slices(
        self, start: int, stop: int | None, lrange: tuple[int, int]
    ) -> None:
        assert Commands("ns").list_range("k", start, stop).args == ("LRANGE", "ns:k", *lrange)

    def test_scan_match_escapes_glob_characters(self) -> None:
        c = Commands("ns")
        assert c.scan_match("") == "ns:*"
        assert c.scan_match("a*b?[c]\\") == "ns:a\\*b\\?\\[c\\]\\\\*"
        page = c.scan_page("ns:*", 0)
        assert page.raw
        assert page.parse((b"17", [b"ns:a", b"ns:b", b"ns:\xff"])) == (17, ["a", "b"])

    def test_ttl_replies(self) -> None:
        parse = Commands("ns").ttl("k").parse
        assert parse(-2) is None
        assert parse(-1) == math.inf  # a key some other client wrote without expiry
        assert parse(1234) == 1.234

    def test_only_appends_and_creates_are_not_retried(self) -> None:
        c = Commands("ns")
        assert not c.list_append("k", "v", max_items=3, ttl_seconds=1).idempotent
        assert not c.list_create("k", 1, "v").idempotent
        assert all(cmd.idempotent for cmd in (c.get("k"), c.delete("k"), c.list_range("k")))


class TestUrls:
    def test_defaults_and_redaction(self) -> None:
        s = RedisStorage.from_url(f"redis://me:{PASSWORD}@h:1/2", namespace="x", check=False)
        assert s.url == "redis://me:***@h:1/2"
        stats = s.stats()  # unreachable host: stats still answer
        assert stats["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT <= 2
        assert stats["connect_timeout"] == DEFAULT_CONNECT_TIMEOUT <= 2
        assert stats["retries"] == DEFAULT_RETRIES
        assert stats["reachable"] is False
        _no_secret(repr(s), str(stats))
        s.close()

    def test_options(self) -> None:
        url = f"unix:///tmp/r.sock?db=3&password={PASSWORD}&socket_timeout=0.25&retries=0"
        s = RedisStorage.from_url(url, namespace="x", check=False)
        assert s.url == "unix:///tmp/r.sock?db=3&password=***&socket_timeout=0.25&retries=0"
        assert s.stats()["socket_timeout"] == 0.25 and s.stats()["retries"] == 0
        s.close()

    @pytest.mark.parametrize(
        "url",
        [
            f"redis://:{PASSWORD}@localhost:6379/0?bogus=1",
            f"redis://:{PASSWORD}@localhost/0?ssl_ca_certs=/x.pem",  # TLS options need rediss
            f"redis://:{PASSWORD}@localhost/notadb",
            f"redis://:{PASSWORD}@localhost:notaport/0",
            f"redis://:{PASSWORD}@localhost/0?socket_timeout=-1",
            f"redis://:{PASSWORD}@localhost/0?socket_timeout=nan",
            f"redis://:{PASSWORD}@localhost/0?retries=many",
            f"rediss://:{PASSWORD}@localhost/0?ssl_cert_reqs=maybe",
            "unix://",
        ],
    )
    def test_bad_urls_are_config_errors(self, url: str) -> None:
        with pytest.raises(ConfigError) as info:
            RedisStorage.from_url(url, namespace="x")
        _no_secret(str(info.value))

    def test_bad_namespace(self) -> None:
        with pytest.raises(ConfigError):
            RedisStorage.from_url("redis://localhost/0", namespace="a:b", check=False)


# -- data layout on a real server ---------------------------------------------------------------
def test_namespaces_are_isolated_and_keys_carry_the_prefix(
    redis_url: str, raw: redis.Redis
) -> None:
    a = RedisStorage.from_url(redis_url, namespace="alpha")
    b = RedisStorage.from_url(redis_url, namespace="beta")
    a.set_with_ttl("k", 60, "from a")
    b.set_with_ttl("k", 60, "from b")
    assert a.list_create("l", 60, "meta")
    assert (a.get("k"), b.get("k")) == ("from a", "from b")
    assert list(b.scan()) == ["k"] and b.list_range("l") == []
    assert sorted(raw.scan_iter("*")) == ["alpha:k", "alpha:l", "beta:k"]
    assert raw.lrange("alpha:l", 0, -1) == ["meta"]
    assert b.delete("l") is False and a.exists("l")
    a.close()
    b.close()


def test_scan_uses_scan_with_a_cursor_never_keys(store: RedisStorage, raw: redis.Redis) -> None:
    with raw.pipeline(transaction=False) as pipe:
        for i in range(2500):
            pipe.set(f"test:k{i}", "v", px=60_000)
        pipe.set("other:k", "v", px=60_000)
        pipe.execute()
    raw.config_resetstat()
    keys = list(store.scan())
    assert len(keys) == 2500 and set(keys) == {f"k{i}" for i in range(2500)}
    calls = _commands(raw)
    assert calls["scan"] >= 3  # COUNT 1000: the cursor was followed to the end
    assert "keys" not in calls


def test_ttls_are_milliseconds(store: RedisStorage, raw: redis.Redis) -> None:
    store.set_with_ttl("s", 1.234, "v")
    assert 1100 < raw.pttl("test:s") <= 1234
    store.list_create("l", 2.5, "m")
    assert 2400 < raw.pttl("test:l") <= 2500
    store.list_append("l", "x", max_items=10, ttl_seconds=0.75)
    assert 650 < raw.pttl("test:l") <= 750
    assert store.expire("s", 0.5)
    assert 400 < raw.pttl("test:s") <= 500


def test_script_cache_flushed(store: RedisStorage, raw: redis.Redis) -> None:
    assert store.list_create("l", 60, "meta")
    raw.script_flush()
    assert store.list_append("l", "a", max_items=10, ttl_seconds=60) == 2
    raw.script_flush()
    assert store.list_create("m", 60, "meta")
    assert store.list_range("l") == ["meta", "a"] and store.list_range("m") == ["meta"]


def test_list_append_and_get_are_one_round_trip(store: RedisStorage, raw: redis.Redis) -> None:
    store.list_create("l", 60, "meta")
    store.list_append("l", "warm", max_items=10, ttl_seconds=60)  # script cached, pool warm

    def served(fn: Any) -> dict[str, int]:
        """Commands the server ran for fn(), the ones inside a script included."""
        raw.config_resetstat()
        fn()
        return {k: v for k, v in _commands(raw).items() if k not in ("info", "config|resetstat")}

    append = served(lambda: store.list_append("l", "x", max_items=10, ttl_seconds=60))
    assert append == {"evalsha": 1, "llen": 1, "rpush": 1, "pexpire": 1, "hget": 1}  # one request
    assert served(lambda: store.get("k")) == {"get": 1}
    assert served(lambda: store.set_with_ttl("k", 60, "v")) == {"set": 1}
    assert served(lambda: store.list_range("l")) == {"lrange": 1}
    assert served(lambda: store.list_create("m", 60, "x")) == {
        "evalsha": 1, "exists": 1, "rpush": 1, "pexpire": 1, "hget": 1
    }  # fmt: skip
    # Filed in the activity index: still one request each.
    assert served(
        lambda: store.list_create("f", 60, "x", scopes=("threads",), score=1)
    ) == {"evalsha": 1, "exists": 1, "rpush": 1, "pexpire": 1, "hget": 1, "hset": 1, "time": 1,
          "zadd": 2, "zrangebyscore": 1}  # fmt: skip
    filed_append = served(
        lambda: store.list_append("f", "t", max_items=10, ttl_seconds=60, score=2)
    )
    assert filed_append.pop("evalsha") == 1 and "zadd" in filed_append


def test_a_listing_page_is_two_round_trips(store: RedisStorage, raw: redis.Redis) -> None:
    """list_threads(limit=20), sync and async: one script call for the index page, then the
    20 list_ends scripts in one pipeline. It was four reads per thread, one after another."""
    threads = ThreadStore(store, ttl_seconds=600, max_turns=10)
    for i in range(25):
        threads.add_turn(threads.create_thread("chat"), "user", f"turn {i}")
    first = threads.list_threads(limit=20)  # scripts cached, pool warm
    assert len(first.threads) == 20

    def trips(fn: Any) -> tuple[int, int]:
        """(requests the server read, script calls it ran) for fn()."""
        raw.config_resetstat()
        fn()
        reads = raw.info("stats")["total_reads_processed"] - 1  # less this INFO
        return reads, _commands(raw).get("evalsha", 0)

    assert trips(lambda: threads.list_threads(limit=20)) == (2, 21)

    async def async_trips() -> tuple[int, int]:
        page = AsyncThreadStore(store)
        await page.list_threads(limit=20)  # this event loop's client connects first
        raw.config_resetstat()
        await page.list_threads(limit=20)
        reads = raw.info("stats")["total_reads_processed"] - 1
        return reads, _commands(raw).get("evalsha", 0)

    assert asyncio.run(async_trips()) == (2, 21)
    again = threads.list_threads(limit=20).threads
    assert [t.thread_id for t in again] == [t.thread_id for t in first.threads]
    # Without the scripts cached the pipeline fails (NOSCRIPT): sent one by one, then cached.
    raw.script_flush()
    assert [t.thread_id for t in threads.list_threads(limit=20).threads] == [
        t.thread_id for t in first.threads
    ]
    assert trips(lambda: threads.list_threads(limit=20))[0] == 2


def test_a_listing_page_with_a_non_utf8_item_skips_only_that_thread(
    store: RedisStorage, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """One thread's last item is not UTF-8 (written by another client): the pipelined page
    fails to decode, so the page is read again one thread at a time and only that one is left
    out, with a warning."""
    threads = ThreadStore(store, ttl_seconds=600, max_turns=10)
    ids = [threads.create_thread("chat") for _ in range(5)]
    for tid in ids:
        threads.add_turn(tid, "user", "hello")
    raw.execute_command("RPUSH", f"test:thread:{ids[2]}", b"\xff\xfe")
    with caplog.at_level(logging.WARNING):
        listed = [t.thread_id for t in threads.list_threads(limit=20).threads]
    assert sorted(listed) == sorted(ids[:2] + ids[3:])
    assert ids[2] in caplog.text and "list skips thread" in caplog.text


def test_foreign_values(store: RedisStorage, raw: redis.Redis) -> None:
    raw.set("test:forever", "x")  # written without a TTL by another client
    assert store.ttl("forever") == math.inf
    raw.execute_command("SET", "test:bin", b"\xff\xfe")
    with pytest.raises(CorruptData):
        store.get("bin")
    store.set_with_ttl("ok", 60, "fine")
    assert store.get("ok") == "fine"  # the connection is still in step
    raw.sadd("test:set", "x")
    with pytest.raises(WrongType):
        store.list_append("set", "x", max_items=5, ttl_seconds=5)


# -- startup ------------------------------------------------------------------------------------
def test_unreachable_at_start_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("THREADSTORE_FALLBACK", "fail")
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        threadstore.open_storage(url)
    assert time.monotonic() - t0 < 1.0
    assert "redis://user:***@127.0.0.1" in str(info.value)
    _no_secret(str(info.value), "".join(traceback.format_exception(info.value)))


def test_unreachable_at_start_falls_back_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    store = threadstore.open_storage(url)  # THREADSTORE_FALLBACK unset: memory
    assert time.monotonic() - t0 < 1.0
    assert isinstance(store, MemoryStorage)
    store.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"redis://user:***@127.0.0.1:{port}/0" in message and "refused" in message
    _no_secret(caplog.text, *(r.getMessage() for r in caplog.records))


def test_paused_at_start_is_detected_within_a_second(own_redis: RedisServer) -> None:
    own_redis.pause()  # accepts connections (the kernel does) but never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable):
            RedisStorage.from_url(own_redis.url + "?socket_timeout=10", namespace="t")
        assert time.monotonic() - t0 < 1.3
    finally:
        own_redis.resume()


# -- passwords ----------------------------------------------------------------------------------
def test_password_never_shown() -> None:
    if redis_binary() is None:
        pytest.skip("redis-server not installed")
    with RedisServer(password=PASSWORD) as server:
        store = RedisStorage.from_url(server.url, namespace="t")
        store.set_with_ttl("k", 60, "v")
        assert store.get("k") == "v"
        _no_secret(repr(store), store.url, str(store.stats()))
        assert store.stats()["reachable"] is True

        bad = server.url.replace(PASSWORD, PASSWORD[::-1])
        with pytest.raises(ConfigError) as info:  # a wrong password is configuration
            RedisStorage.from_url(bad, namespace="t")
        assert PASSWORD[::-1] not in str(info.value)
        no_password = f"redis://127.0.0.1:{server.port}/0"
        with pytest.raises(ConfigError):  # not hidden by the fallback to memory
            threadstore.open_storage(no_password, fallback="memory")

        server.stop()
        with pytest.raises(StorageUnavailable) as down:
            store.get("k")
        _no_secret(str(down.value), "".join(traceback.format_exception(down.value)))
        _no_secret(str(store.stats()))
        store.close()


# -- the server goes away and comes back ---------------------------------------------------------
def test_stopped_server_then_recovery(own_redis: RedisServer) -> None:
    store = RedisStorage.from_url(own_redis.url, namespace="t")
    store.list_create("l", 60, "meta")
    store.set_with_ttl("k", 60, "v")
    before = store.stats()
    own_redis.stop()
    for call in (
        lambda: store.get("k"),
        lambda: store.set_with_ttl("k", 60, "v"),
        lambda: store.list_append("l", "x", max_items=10, ttl_seconds=60),
        lambda: list(store.scan()),
    ):
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unavailable"):
            call()
        assert time.monotonic() - t0 < DEFAULT_SOCKET_TIMEOUT
    stats = store.stats()
    assert stats["reachable"] is False and stats["errors"] - before["errors"] == 4
    # get, set and scan were retried; the append never was
    assert stats["retried"] - before["retried"] == 3 * DEFAULT_RETRIES
    own_redis.start()  # same port, empty data set (no persistence)
    assert store.get("k") is None  # the same store object: the pool reconnected by itself
    assert store.list_create("l", 60, "meta")
    assert store.list_append("l", "x", max_items=10, ttl_seconds=60) == 2
    store.close()


def test_restart_between_calls_is_invisible(own_redis: RedisServer) -> None:
    store = RedisStorage.from_url(own_redis.url, namespace="t")
    store.set_with_ttl("k", 60, "v")
    own_redis.stop()
    own_redis.start()
    # pooled connection is dead: the pool notices before sending, so even an append just works
    assert store.list_create("l", 60, "meta")
    assert store.list_append("l", "x", max_items=10, ttl_seconds=60) == 2
    store.close()


def test_paused_server_times_out_then_recovers(own_redis: RedisServer) -> None:
    store = RedisStorage.from_url(own_redis.url + "?socket_timeout=0.4", namespace="t")
    store.list_create("l", 60, "meta")
    store.list_append("l", "first", max_items=10, ttl_seconds=60)  # the script is cached
    own_redis.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"did not answer within 0\.4 s"):
            store.list_append("l", "sent", max_items=10, ttl_seconds=60)
        with pytest.raises(StorageUnavailable):
            store.get("k")
        assert time.monotonic() - t0 < 1.5  # one socket timeout each: timeouts are not retried
    finally:
        own_redis.resume()
    assert store.get("k") is None
    # The server ran the append it had received while paused: re-sending it would have doubled it.
    assert store.list_range("l") == ["meta", "first", "sent"]
    store.close()


# -- several processes ----------------------------------------------------------------------------
def test_processes_appending_to_one_list_lose_nothing(redis_url: str) -> None:
    store = RedisStorage.from_url(redis_url, namespace="mp")
    writers, per_writer = 4, 250
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), redis_url, "mp", "l", str(w), str(per_writer)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    store.list_create("l", 60, "meta")
    outputs = [p.communicate(timeout=30)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * writers
    assert [int(out) for out in outputs] == [per_writer] * writers
    items = store.list_range("l")
    assert items[0] == "meta" and len(items) == 1 + writers * per_writer
    assert len(set(items)) == len(items)
    for w in range(writers):
        mine = [int(x.split(":")[1]) for x in items[1:] if x.startswith(f"{w}:")]
        assert mine == list(range(per_writer))
    store.close()


# -- other URL forms: unix socket and TLS ---------------------------------------------------------
@contextmanager
def _server(args: list[str]) -> Iterator[None]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server not installed")
    base = [binary, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    proc = subprocess.Popen(base + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def _async_once(store: RedisStorage, method: str, key: str) -> Any:
    """One call through the asyncio client, then close the store."""
    try:
        return await store.aio.call(method, key)
    finally:
        await store.aclose()


def _open_when_ready(url: str) -> RedisStorage:
    deadline = time.monotonic() + 10
    while True:
        try:
            return RedisStorage.from_url(url, namespace="t")
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_unix_socket() -> None:
    folder = Path(tempfile.mkdtemp(prefix="threadstore-unix-"))
    sock = folder / "redis.sock"
    try:
        with _server(["--port", "0", "--unixsocket", str(sock), "--dir", str(folder)]):
            store = _open_when_ready(f"unix://{sock}?db=2")
            assert store.list_create("l", 60, "m") and store.list_range("l") == ["m"]
            assert store.url == f"unix://{sock}?db=2"
            assert asyncio.run(_async_once(store, "list_range", "l")) == ["m"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_tls() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = Path(tempfile.mkdtemp(prefix="threadstore-tls-"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    try:
        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
                "-subj", "/CN=threadstore test CA")  # fmt: skip
        openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
        (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "server.crt", "-days", "1",
                "-extfile", "san.ext")  # fmt: skip
        port = free_port()
        tls = ["--port", "0", "--tls-port", str(port), "--dir", str(folder),
               "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
               "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"]  # fmt: skip
        with _server(tls):
            url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={folder / 'ca.crt'}"
            store = _open_when_ready(url)
            store.set_with_ttl("k", 60, "over tls")
            assert store.get("k") == "over tls"
            assert asyncio.run(_async_once(store, "get", "k")) == "over tls"
            # without our CA the certificate is refused: unreachable, not silently trusted
            with pytest.raises(StorageUnavailable, match="cannot reach"):
                RedisStorage.from_url(f"rediss://127.0.0.1:{port}/0", namespace="t")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- async ----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_every_operation(store: RedisStorage) -> None:
    call = store.aio.call
    assert await call("get", "k") is None
    assert await call("set_with_ttl", "k", 60, "v") is None
    await call("setex", "k2", 60, "v2")
    assert await call("get", "k") == "v"
    assert await call("exists", "k") is True
    left = await call("ttl", "k")
    assert 59 < left <= 60
    assert await call("expire", "k", 100) is True
    assert await call("delete", "k2") is True
    assert await call("delete", "k2") is False
    assert await call("list_create", "l", 60, "meta") is True
    assert await call("list_create", "l", 60, "meta") is False
    assert await call("list_append", "l", "a", max_items=3, ttl_seconds=60) == 2
    assert await call("list_append", "l", "b", max_items=2, ttl_seconds=60) == -1
    assert await call("list_append", "nope", "b", max_items=2, ttl_seconds=60) == 0
    assert await call("list_range", "l") == ["meta", "a"]
    assert await call("list_range", "l", 1, 2) == ["a"]
    assert await call("list_length", "l") == 2
    assert sorted(await call("scan")) == ["k", "l"]
    assert await call("scan", "l") == ["l"]
    assert (await call("stats"))["reachable"] is True
    with pytest.raises(WrongType):
        await call("get", "l")
    with pytest.raises(InvalidInput, match="key"):
        await call("get", "")
    with pytest.raises(AttributeError):
        await call("_run")
    await call("close")
    with pytest.raises(StorageUnavailable):
        await call("get", "k")
    with pytest.raises(StorageUnavailable):
        store.get("k")


@pytest.mark.anyio
async def test_async_concurrent_appends(store: RedisStorage) -> None:
    assert store.list_create("l", 60, "meta")

    async def append(i: int) -> int:
        n: int = await store.aio.call("list_append", "l", str(i), max_items=1000, ttl_seconds=60)
        return n

    lengths = await asyncio.gather(*(append(i) for i in range(64)))
    assert sorted(lengths) == list(range(2, 66))
    items = store.list_range("l")
    assert sorted(map(int, items[1:])) == list(range(64))
    await store.aclose()


@pytest.mark.anyio
async def test_async_failures_and_recovery(own_redis: RedisServer) -> None:
    store = RedisStorage.from_url(own_redis.url, namespace="t")
    await store.aio.call("set_with_ttl", "k", 60, "v")
    own_redis.stop()
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable, match="unavailable"):
        await store.aio.call("get", "k")
    with pytest.raises(StorageUnavailable):
        await store.aio.call("list_append", "l", "x", max_items=5, ttl_seconds=5)
    assert time.monotonic() - t0 < DEFAULT_SOCKET_TIMEOUT
    own_redis.start()
    assert await store.aio.call("get", "k") is None
    assert await store.aio.call("list_create", "l", 60, "m") is True
    store.close()  # from inside the loop: the async client is closed by a task


def test_async_from_several_event_loops(store: RedisStorage) -> None:
    """One asyncio client per event loop: loops one after another, and at once in threads."""

    async def roundtrip(i: int) -> str | None:
        await store.aio.call("set_with_ttl", f"k{i}", 60, str(i))
        value: str | None = await store.aio.call("get", f"k{i}")
        await store.aio.aclose()  # this loop's client only
        return value

    assert asyncio.run(roundtrip(1)) == "1"
    assert asyncio.run(roundtrip(2)) == "2"
    results: list[str | None] = []

    def in_thread(i: int) -> None:
        results.append(asyncio.run(roundtrip(i)))

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(3, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["3", "4", "5"]
    assert store.get("k1") == "1"
