"""Faults: Redis stopped, killed, restarted and paused mid-run; SQLite on a read-only or full
file system; corrupt stored values.

What must hold: every failure is a ThreadstoreError with a clear message, raised within a bounded
time (no hang); the same store object works again once the fault is gone (no reopen); no
acknowledged turn is lost when the server keeps its data; a corrupt value breaks only its own
key.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reliability_workers.figures import record
from threadstore import (
    AsyncThreadStore,
    CorruptData,
    Storage,
    StorageUnavailable,
    ThreadNotFound,
    ThreadStore,
    WrongType,
    open_storage,
)
from threadstore.testing import RedisServer, free_port, redis_binary

BOUND = 10.0  # seconds: "no hang". The backends answer far sooner; the figures say how soon.
HERE = Path(__file__).parent


def _timed(fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        fn()
    except BaseException as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# -- Redis: stopped, then restarted on the same port -------------------------------------------
def _thread_ops(store: ThreadStore, tid: str) -> list[Callable[[], Any]]:
    return [
        lambda: store.add_turn(tid, "user", "during the outage"),
        lambda: store.get_thread(tid),
        lambda: store.create_thread("chat"),
        lambda: store.list_threads(),
        lambda: store.build_history(tid, max_tokens=100),
        lambda: store.delete_thread(tid),
        lambda: store.storage.set_with_ttl("k", 60, "v"),
        lambda: list(store.storage.scan()),
    ]


@pytest.mark.redis
def test_redis_stopped_and_restarted(own_redis: RedisServer) -> None:
    storage = open_storage(own_redis.url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100)
    tid = store.create_thread("chat")
    store.add_turn(tid, "user", "before")
    own_redis.stop()
    worst = 0.0
    ops = _thread_ops(store, tid)
    for op in ops:
        exc, took = _timed(op)
        assert isinstance(exc, StorageUnavailable), exc
        assert f"127.0.0.1:{own_redis.port}" in str(exc)
        assert took < BOUND
        worst = max(worst, took)
    stats = storage.stats()  # never raises for an unreachable server
    assert stats["reachable"] is False
    own_redis.start()  # same port, empty (this server keeps no data across restarts)
    with pytest.raises(ThreadNotFound):
        store.add_turn(tid, "user", "the server lost it")
    fresh = store.create_thread("chat")  # the same store object recovered by itself
    store.add_turn(fresh, "user", "after")
    thread = store.get_thread(fresh)
    assert thread is not None and [t.content for t in thread.turns] == ["after"]
    storage.close()
    record("faults redis stop/restart sync", calls_failed=len(ops), worst_seconds=round(worst, 3))


@pytest.mark.redis
def test_redis_stopped_and_restarted_async(own_redis: RedisServer) -> None:
    storage = open_storage(own_redis.url, fallback="fail")
    store = AsyncThreadStore(storage, ttl_seconds=600, max_turns=100)

    async def main() -> float:
        tid = await store.create_thread("chat")
        await store.add_turn(tid, "user", "before")
        own_redis.stop()
        worst = 0.0
        for make in (
            lambda: store.add_turn(tid, "user", "x"),
            lambda: store.get_thread(tid),
            lambda: store.create_thread("chat"),
            lambda: store.list_threads(),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(make(), BOUND)
            worst = max(worst, time.monotonic() - started)
        own_redis.start()
        fresh = await store.create_thread("chat")
        await store.add_turn(fresh, "user", "after")
        thread = await store.get_thread(fresh)
        assert thread is not None and len(thread.turns) == 1
        await storage.aclose()  # type: ignore[attr-defined]
        return worst

    worst = asyncio.run(main())
    storage.close()
    record("faults redis stop/restart async", calls_failed=4, worst_seconds=round(worst, 3))


# -- Redis: paused with SIGSTOP (alive but silent) ---------------------------------------------
@pytest.mark.redis
def test_redis_paused_then_resumed(own_redis: RedisServer) -> None:
    url = own_redis.url + "?socket_timeout=0.3"
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=1000)
    tid = store.create_thread("chat")
    acked = [store.add_turn(tid, "user", f"w:{i}").content for i in range(5)]
    for i in range(8):
        storage.set_with_ttl(f"key{i}", 600, f"value{i}")
    own_redis.pause()
    timed_out: list[str] = []
    worst = 0.0
    try:
        for i in range(2):
            exc, took = _timed(lambda i=i: store.add_turn(tid, "user", f"w:{5 + i}"))  # type: ignore[misc]
            assert isinstance(exc, StorageUnavailable), exc
            assert "did not answer" in str(exc)
            timed_out.append(f"w:{5 + i}")
            worst = max(worst, took)
            exc, took = _timed(lambda i=i: storage.get(f"key{i}"))  # type: ignore[misc]
            assert isinstance(exc, StorageUnavailable), exc
            worst = max(worst, took)
    finally:
        own_redis.resume()
    assert worst < 0.3 + 2.0, f"a paused server held a call {worst:.2f} s"
    # After resume, no reply meant for a timed-out call is handed to a later one.
    for _ in range(5):
        for i in reversed(range(8)):
            assert storage.get(f"key{i}") == f"value{i}"
    acked.append(store.add_turn(tid, "user", "w:8").content)
    thread = store.get_thread(tid)
    assert thread is not None
    contents = [t.content for t in thread.turns]
    assert set(acked) <= set(contents)
    assert set(contents) - set(acked) <= set(timed_out)  # outcome unknown: present or not
    assert len(contents) == len(set(contents))
    storage.close()
    record(
        "faults redis pause/resume sync",
        calls_timed_out=4,
        worst_seconds=round(worst, 3),
        socket_timeout=0.3,
        timed_out_appends_applied_later=len(set(contents) - set(acked)),
        lost=0,
    )


@pytest.mark.redis
def test_redis_paused_then_resumed_async(own_redis: RedisServer) -> None:
    storage = open_storage(own_redis.url + "?socket_timeout=0.3", fallback="fail")
    store = AsyncThreadStore(storage, ttl_seconds=600, max_turns=1000)

    async def main() -> float:
        tid = await store.create_thread("chat")
        for i in range(8):
            await storage.aio.call("set_with_ttl", f"key{i}", 600, f"value{i}")
        own_redis.pause()
        worst = 0.0
        try:
            for i in range(2):
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="did not answer"):
                    await asyncio.wait_for(store.add_turn(tid, "user", f"x{i}"), BOUND)
                with pytest.raises(StorageUnavailable):
                    await asyncio.wait_for(storage.aio.call("get", f"key{i}"), BOUND)
                worst = max(worst, time.monotonic() - started)
        finally:
            own_redis.resume()
        for i in reversed(range(8)):
            assert await storage.aio.call("get", f"key{i}") == f"value{i}"
        await store.add_turn(tid, "user", "after")
        thread = await store.get_thread(tid)
        assert thread is not None and thread.turns[-1].content == "after"
        await storage.aclose()  # type: ignore[attr-defined]
        return worst

    worst = asyncio.run(main())
    storage.close()
    assert worst < 2 * (0.3 + 2.0)
    record("faults redis pause/resume async", calls_timed_out=4, worst_seconds=round(worst, 3))


# -- Redis with an append-only file, killed and paused under a running writer -------------------
class AofRedis:
    """A redis-server that fsyncs every write (appendfsync always): it keeps acknowledged data
    across SIGKILL. Started and killed by this test only."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_binary()
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    if redis_binary() is None:
        if os.environ.get("THREADSTORE_REQUIRE_REDIS") == "1":
            pytest.fail("THREADSTORE_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    server = AofRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.mark.redis
def test_redis_killed_and_paused_under_a_running_writer(aof_redis: AofRedis) -> None:
    storage = open_storage(aof_redis.url + "?socket_timeout=0.5", fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=1_000_000)
    tid = store.create_thread("chat")
    acked: list[str] = []
    failed: list[tuple[str, float, str]] = []
    stop = threading.Event()
    oks_after_faults = [0]
    faults_done = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            content = f"w:{i}"
            started = time.monotonic()
            try:
                store.add_turn(tid, "user", content)
            except StorageUnavailable as exc:
                failed.append((content, time.monotonic() - started, str(exc)))
                time.sleep(0.02)
            except ThreadNotFound:  # only if the server had lost data: counted as a loss below
                failed.append((content, time.monotonic() - started, "not found"))
                time.sleep(0.02)
            else:
                acked.append(content)
                if faults_done.is_set():
                    oks_after_faults[0] += 1
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    faults = 0
    try:
        time.sleep(0.4)
        aof_redis.kill()  # SIGKILL: no shutdown, no final fsync beyond "always"
        faults += 1
        time.sleep(0.4)
        aof_redis.start()
        time.sleep(0.4)
        aof_redis.signal(signal.SIGSTOP)
        faults += 1
        time.sleep(1.0)
        aof_redis.signal(signal.SIGCONT)
        faults_done.set()
        deadline = time.monotonic() + 5
        while oks_after_faults[0] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=30)
        aof_redis.signal(signal.SIGCONT)
    assert oks_after_faults[0] >= 20, "the writer did not recover after the faults"
    assert failed, "no call failed: the faults were not injected"
    assert all(took < BOUND for _, took, _ in failed)
    assert all(msg != "not found" for _, _, msg in failed), "the thread vanished"
    thread = store.get_thread(tid)
    assert thread is not None
    contents = [t.content for t in thread.turns]
    assert len(contents) == len(set(contents))
    numbers = [int(c[2:]) for c in contents]
    assert numbers == sorted(numbers), "turns out of order"
    missing = set(acked) - set(contents)
    assert not missing, f"acknowledged turns lost: {sorted(missing)[:5]}"
    unknown_applied = set(contents) - set(acked)
    assert unknown_applied <= {c for c, _, _ in failed}
    storage.close()
    record(
        "faults redis kill+restart+pause under a writer (AOF always)",
        faults_injected=faults,
        appends_acknowledged=len(acked),
        appends_failed_fast=len(failed),
        worst_failure_seconds=round(max(took for _, took, _ in failed), 3),
        failed_appends_applied_anyway=len(unknown_applied),
        lost=0,
    )


# -- SQLite: read-only and full file systems (tmpfs in a private mount namespace) --------------
def _run_fs_worker(tmp_path: Path) -> dict[str, Any]:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a private tmpfs (read-only / full disk)")
    base = tmp_path / "mounts"
    base.mkdir()
    done = subprocess.run(
        [unshare, "-m", "--propagation", "private", sys.executable,
         str(HERE / "reliability_workers" / "sqlite_faults.py"), str(base)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot create a mount namespace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    if "unsupported" in results:
        pytest.skip(results["unsupported"])
    return results


def test_sqlite_read_only_and_full_file_systems(tmp_path: Path) -> None:
    results = _run_fs_worker(tmp_path)
    ro = results["read_only"]
    for case in ("open_existing", "open_new", "open_new_dir"):
        assert ro[case]["error"] == "StorageUnavailable", ro[case]
        assert "Read-only file system" in ro[case]["message"], ro[case]
    full = results["disk_full"]
    assert full["appended_before_full"] > 5
    assert full["full_error"]["error"] == "StorageUnavailable"
    assert "full" in full["full_error"]["message"]
    assert full["full_error"]["seconds"] < BOUND
    assert full["all_acknowledged_present"] is True
    assert full["append_after_space_freed"] == {"ok": 1}
    assert full["turns_after"] == full["appended_before_full"] + 1
    assert full["integrity"] == "ok"
    record(
        "faults sqlite read-only fs + disk full (1 MiB tmpfs)",
        read_only_cases=3,
        turns_acknowledged_before_full=full["appended_before_full"],
        lost=0,
        recovered_after_space_freed=True,
        integrity="ok",
    )


def test_sqlite_unusable_paths(tmp_path: Path) -> None:
    """A path under a regular file, a directory in place of the file: clear errors at open."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = {
        "parent is a file": f"sqlite:///{blocker}/threads.db",
        "path is a directory": f"sqlite:///{tmp_path}",
    }
    for what, url in cases.items():
        exc, took = _timed(lambda url=url: open_storage(url, fallback="fail"))  # type: ignore[misc]
        assert isinstance(exc, StorageUnavailable), (what, exc)
        assert str(tmp_path) in str(exc), (what, exc)
        assert took < BOUND
    missing = tmp_path / "does" / "not" / "exist" / "threads.db"
    storage = open_storage(f"sqlite:///{missing}", fallback="fail")  # created, owner-only
    storage.set_with_ttl("k", 60, "v")
    storage.close()
    assert (missing.parent.stat().st_mode & 0o777) == 0o700
    # with fallback="memory" the same failure is a warning and an in-memory store
    fallback = open_storage(cases["parent is a file"], fallback="memory")
    assert fallback.kind == "memory"
    fallback.close()


def test_sqlite_corrupt_file_pages(tmp_path: Path) -> None:
    path = tmp_path / "pages.db"
    storage = open_storage(f"sqlite:///{path}", fallback="fail")
    for i in range(300):
        storage.set_with_ttl(f"k{i}", 600, "v" * 500)
    storage.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 3 + 2000] = b"\x55" * 2000  # scribble over one page
    path.write_bytes(bytes(data))
    errors: dict[str, int] = {}
    try:
        storage = open_storage(f"sqlite:///{path}", fallback="fail")
    except CorruptData:
        errors["open"] = 1
    else:
        for i in range(300):
            exc, took = _timed(lambda i=i: storage.get(f"k{i}"))  # type: ignore[misc]
            assert took < BOUND
            if exc is not None:
                assert isinstance(exc, CorruptData), exc
                assert "restore it from a backup" in str(exc)
                errors["get"] = errors.get("get", 0) + 1
        storage.close()
    assert errors, "scribbling over a page went unnoticed"


# -- corrupt stored values: an error for that key only ------------------------------------------
@pytest.fixture
def storage(any_url: str) -> Iterator[Storage]:
    s = open_storage(any_url, fallback="fail")
    yield s
    s.close()


def _corrupt_threads(store: ThreadStore) -> dict[str, str]:
    s = store.storage
    ids = {name: store.create_thread("chat") for name in ("good", "bad_turn", "bad_head", "string")}
    store.add_turn(ids["good"], "user", "fine")
    store.add_turn(ids["bad_turn"], "user", "fine")
    s.list_append(f"thread:{ids['bad_turn']}", "{garbage", max_items=100, ttl_seconds=600)
    s.delete(f"thread:{ids['bad_head']}")
    s.list_create(f"thread:{ids['bad_head']}", 600, '{"v": 1, "created_at": "yesterday"}')
    s.set_with_ttl(f"thread:{ids['string']}", 600, "a string where a list belongs")
    return ids


def test_corrupt_values_break_only_their_thread(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100)
    ids = _corrupt_threads(store)
    with pytest.raises(CorruptData, match=f"thread {ids['bad_turn']}: stored turn 2"):
        store.get_thread(ids["bad_turn"])
    with pytest.raises(CorruptData, match=f"thread {ids['bad_head']}: its stored header"):
        store.get_thread(ids["bad_head"])
    with pytest.raises(WrongType, match=ids["string"]):
        store.get_thread(ids["string"])
    with pytest.raises(WrongType):
        store.add_turn(ids["string"], "user", "x")
    with pytest.raises(CorruptData):
        store.build_history(ids["bad_turn"], max_tokens=1000)
    # everything else works
    thread = store.get_thread(ids["good"])
    assert thread is not None and [t.content for t in thread.turns] == ["fine"]
    store.add_turn(ids["good"], "assistant", "still fine")
    assert store.build_history(ids["good"], max_tokens=1000).turns_included == 2
    child = store.create_thread("chat", parent_thread_id=ids["good"])
    assert len(store.get_thread_chain(child)) == 2
    assert store.delete_thread(ids["bad_turn"]) is True  # a corrupt thread can be removed
    record(f"faults corrupt values {storage.kind}", corrupt_threads=3, healthy_threads_ok=True)


def test_list_threads_skips_a_thread_with_undecodable_json(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100)
    ids = _corrupt_threads(store)
    storage.delete(f"thread:{ids['string']}")  # only JSON damage here; the string case is below
    listed = {t.thread_id for t in store.list_threads(limit=100).threads}
    assert listed == {ids["good"]}


def test_list_threads_skips_a_thread_key_holding_a_string(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100)
    ids = _corrupt_threads(store)
    listed = {t.thread_id for t in store.list_threads(limit=100).threads}
    assert listed == {ids["good"]}


def test_export_skips_a_corrupt_thread(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100)
    ids = _corrupt_threads(store)
    storage.delete(f"thread:{ids['string']}")
    exported = list(store.export_threads())
    assert len(exported) == 1
    assert ids["good"] in exported[0]


def test_sqlite_undecodable_row_is_corrupt_data_for_that_key(tmp_path: Path) -> None:
    path = tmp_path / "rows.db"
    storage = open_storage(f"sqlite:///{path}", fallback="fail")
    for key in ("text", "blob", "fine"):
        storage.set_with_ttl(key, 600, "ok")
    storage.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE kv SET value = CAST(X'C328' AS TEXT) WHERE key = 'text'")
        conn.execute("UPDATE kv SET value = X'FFFE' WHERE key = 'blob'")
    storage = open_storage(f"sqlite:///{path}", fallback="fail")
    try:
        assert storage.get("fine") == "ok"
        with pytest.raises(CorruptData, match="text"):
            storage.get("text")
        value = None
        with pytest.raises(CorruptData, match="blob"):
            value = storage.get("blob")
        assert value is None
    finally:
        storage.close()


@pytest.mark.redis
def test_redis_undecodable_value_is_corrupt_data_for_that_key(redis_url: str) -> None:
    import redis

    storage = open_storage(redis_url, fallback="fail")
    raw = redis.Redis.from_url(redis_url)
    raw.set("threadstore:bad", b"\xff\xfe", px=60_000)
    raw.rpush("threadstore:badlist", b"meta", b"\xc3\x28")
    storage.set_with_ttl("fine", 60, "ok")
    with pytest.raises(CorruptData, match="'bad'"):
        storage.get("bad")
    with pytest.raises(CorruptData, match="'badlist'"):
        storage.list_range("badlist")
    assert storage.get("fine") == "ok"
    assert set(storage.scan()) == {"bad", "badlist", "fine"}
    raw.close()
    storage.close()


@pytest.mark.redis
def test_redis_one_undecodable_key_name_does_not_break_scan(redis_url: str) -> None:
    import redis

    storage = open_storage(redis_url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=10)
    tid = store.create_thread("chat")
    raw = redis.Redis.from_url(redis_url)
    raw.set(b"threadstore:\xff\xfe", b"x", px=60_000)
    try:
        assert set(storage.scan()) >= {f"thread:{tid}"}
        assert [t.thread_id for t in store.list_threads().threads] == [tid]
    finally:
        raw.close()
        storage.close()
