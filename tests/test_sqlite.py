"""The SQLite backend: the shared contract on a real file and on :memory:, plus files,
permissions, schema versions, processes, kills, fork and lock contention."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import StorageContract
from threadstore import (
    ConfigError,
    InvalidInput,
    Storage,
    StorageUnavailable,
    ThreadStore,
    ThreadstoreError,
    _sqlite,
    load_settings,
    open_storage,
)
from threadstore._sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStorage


class TestSQLiteContract(StorageContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Storage]:
        s = SQLiteStorage.from_url(f"sqlite:///{tmp_path}/threads.db", namespace="test")
        yield s
        s.close()


class TestSQLiteMemoryContract(StorageContract):
    @pytest.fixture
    def store(self) -> Iterator[Storage]:
        s = SQLiteStorage.from_url("sqlite:///:memory:", namespace="test")
        yield s
        s.close()


# -- helpers --------------------------------------------------------------------------------------
WORKER = Path(__file__).parent / "sqlite_workers" / "worker.py"


def open_file(path: Path, namespace: str = "test", **kwargs: Any) -> SQLiteStorage:
    return SQLiteStorage(path, namespace=namespace, **kwargs)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=10)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStorage]:
    s = open_file(db)
    yield s
    s.close()


# -- URLs -----------------------------------------------------------------------------------------
def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = SQLiteStorage.from_url("sqlite:///rel/t.db", namespace="a")
    assert rel.path == str(tmp_path / "rel" / "t.db")
    assert rel.url == f"sqlite:///{tmp_path}/rel/t.db"  # absolute: four slashes
    rel.close()
    absolute = SQLiteStorage.from_url(
        f"sqlite:///{tmp_path}/abs.db?synchronous=full&busy_timeout_ms=250", namespace="a"
    )
    stats = absolute.stats()
    assert stats["synchronous"] == "FULL" and stats["busy_timeout_ms"] == 250
    assert stats["path"] == str(tmp_path / "abs.db")
    absolute.close()
    mem = SQLiteStorage.from_url("sqlite:///:memory:", namespace="a")
    assert mem.url == "sqlite:///:memory:" and not (tmp_path / ":memory:").exists()
    mem.close()


def test_default_cli_url_is_accepted(tmp_path: Path) -> None:
    settings = load_settings({"XDG_STATE_HOME": str(tmp_path / "state")})
    url = settings.default_sqlite_url
    assert url.startswith("sqlite:////")
    s = open_storage(url, fallback="fail")
    assert isinstance(s, SQLiteStorage)
    assert s.path == str(tmp_path / "state" / "threadstore" / "threads.db")
    s.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite:///x.db?cache=shared", "unknown sqlite URL option 'cache'"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous"),
        ("sqlite:///x.db?busy_timeout_ms=soon", "busy_timeout_ms"),
        ("sqlite:///x.db?busy_timeout_ms=-1", "busy_timeout_ms"),
        ("sqlite://host/x.db", "host"),
        ("sqlite:///", "no path"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SQLiteStorage.from_url(url, namespace="a")


# -- namespaces, files, schema --------------------------------------------------------------------
def test_namespaces_never_see_each_other(db: Path) -> None:
    a, b = open_file(db, "alpha"), open_file(db, "beta")
    a.set_with_ttl("k", 60, "from a")
    a.list_create("l", 60, "a-meta")
    assert b.get("k") is None and b.list_range("l") == [] and list(b.scan()) == []
    b.set_with_ttl("k", 60, "from b")
    assert a.get("k") == "from a" and b.get("k") == "from b"
    assert b.delete("k") and a.get("k") == "from a"
    assert b.list_create("l", 60, "b-meta")
    assert a.list_range("l") == ["a-meta"] and b.list_range("l") == ["b-meta"]
    assert sorted(a.scan()) == ["k", "l"] and list(b.scan()) == ["l"]
    a.close()
    b.close()


def test_new_directories_are_0700_and_files_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "a" / "b" / "threads.db"
        s = open_file(path)
        s.set_with_ttl("k", 60, "v")
        for directory in (tmp_path / "a", tmp_path / "a" / "b"):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        # SQLite gives the -wal and -shm files the mode of the database file.
        for name in ("threads.db", "threads.db-wal", "threads.db-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        s.close()
    finally:
        os.umask(old)


def test_schema_version_and_application_id(store: SQLiteStorage, db: Path) -> None:
    c = raw(db)
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()
    assert store.stats()["schema_version"] == SCHEMA_VERSION


def test_newer_schema_is_refused_and_left_untouched(db: Path) -> None:
    open_file(db).close()
    c = raw(db)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()
    before = digest(db)
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}.*newer"):
        open_file(db)
    assert digest(db) == before


def test_not_a_database_is_refused_and_left_untouched(db: Path) -> None:
    db.write_text("my notes, not a database\n" * 400)
    before = digest(db)
    with pytest.raises(ConfigError, match=r"not a usable SQLite database.*untouched"):
        open_file(db)
    assert digest(db) == before


def test_corrupt_database_is_refused_and_left_untouched(db: Path) -> None:
    s = open_file(db)
    s.set_with_ttl("k", 60, "v")
    s.close()
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # page 1 (the schema) after the file header
    db.write_bytes(bytes(data))
    before = digest(db)
    with pytest.raises(ConfigError, match="not a usable SQLite database"):
        open_file(db)
    assert digest(db) == before


def test_another_applications_database_is_refused(db: Path) -> None:
    c = raw(db)
    c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    c.close()
    before = digest(db)
    with pytest.raises(ConfigError, match="another application"):
        open_file(db)
    assert digest(db) == before


def test_reopen_keeps_data(db: Path) -> None:
    s = open_file(db)
    s.set_with_ttl("k", 60, "v")
    s.list_create("l", 60, "m")
    s.list_append("l", "t", max_items=5, ttl_seconds=60)
    s.close()
    s = open_file(db)
    assert s.get("k") == "v" and s.list_range("l") == ["m", "t"]
    s.close()


# -- migration from schema version 1 --------------------------------------------------------------
V1_SCHEMA = """
CREATE TABLE namespace (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE kv (
    id INTEGER PRIMARY KEY,
    ns INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    length INTEGER,
    expires_at INTEGER NOT NULL,
    UNIQUE (ns, key)
);
CREATE INDEX kv_expires_at ON kv (expires_at);
CREATE TABLE item (
    list_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (list_id, idx)
) WITHOUT ROWID;
CREATE TRIGGER kv_list_deleted AFTER DELETE ON kv WHEN old.length IS NOT NULL
BEGIN DELETE FROM item WHERE list_id = old.id; END;
CREATE TRIGGER kv_list_replaced AFTER UPDATE OF length ON kv
WHEN old.length IS NOT NULL AND new.length IS NULL
BEGIN DELETE FROM item WHERE list_id = old.id; END;
"""

V1_STRINGS = {"greeting": "hello", "unicode": "žluťoučký kůň 🐴", "big": "s" * 9000}
V1_LISTS = {
    "thread:a": ["meta-a", *(f"turn {i} " + "x" * 1200 for i in range(12))],  # overflow pages
    "thread:b": ["meta-b"],
    "thread:c": ["meta-c", "ü", "", "{}"],
}


def make_v1_file(path: Path) -> None:
    """A file as threadstore wrote it at schema version 1 (WAL, user_version 1), with strings and
    lists in namespace "test", a list in another namespace and an expired list."""
    c = raw(path)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("BEGIN")
    for statement in V1_SCHEMA.split(";\n"):
        if statement.strip():
            c.execute(statement)
    c.execute("INSERT INTO namespace (id, name) VALUES (1, 'test'), (2, 'other')")
    later = int(time.time() * 1000) + 3_600_000
    for key, value in V1_STRINGS.items():
        c.execute(
            "INSERT INTO kv (ns, key, value, length, expires_at) VALUES (1, ?, ?, NULL, ?)",
            (key, value, later),
        )
    lists = [(1, key, items, later) for key, items in V1_LISTS.items()]
    lists += [(2, "thread:a", ["other-meta", "other-turn"], later), (1, "gone", ["g"], 1)]
    for ns, key, items, expires_at in lists:
        list_id = c.execute(
            "INSERT INTO kv (ns, key, value, length, expires_at) VALUES (?, ?, NULL, ?, ?)"
            " RETURNING id",
            (ns, key, len(items), expires_at),
        ).fetchone()[0]
        order = list(range(len(items)))
        random.Random(key).shuffle(order)  # rows written out of order; idx decides
        for idx in order:
            c.execute(
                "INSERT INTO item (list_id, idx, value) VALUES (?, ?, ?)",
                (list_id, idx, items[idx]),
            )
    c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    c.execute("PRAGMA user_version = 1")
    c.execute("COMMIT")
    c.close()


def dump(path: Path) -> dict[str, list[Any]]:
    c = raw(path)
    out = {
        "namespace": c.execute("SELECT * FROM namespace ORDER BY id").fetchall(),
        # the columns every schema version has (v3 adds the index's scope and score)
        "kv": c.execute(
            "SELECT id, ns, key, value, length, expires_at FROM kv ORDER BY id"
        ).fetchall(),
        "item": c.execute("SELECT list_id, idx, value FROM item ORDER BY list_id, idx").fetchall(),
    }
    c.close()
    return out


def schema(path: Path) -> list[tuple[str, str, str | None]]:
    c = raw(path)
    rows = c.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    c.close()
    return rows


def test_v1_file_is_migrated_in_place_keeping_every_key_and_item(db: Path) -> None:
    make_v1_file(db)
    before = dump(db)
    assert len(before["item"]) == sum(map(len, V1_LISTS.values())) + 3
    s = open_file(db)
    c = raw(db)
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    c.close()
    assert dump(db) == before  # the same rows, ids and order
    layout = {name: sql for _, name, sql in schema(db)}
    assert "item_v2" not in layout and "WITHOUT ROWID" not in layout["item"].upper()
    assert layout["item_pos"] == "CREATE UNIQUE INDEX item_pos ON item (list_id, idx)"
    assert {"kv_list_deleted", "kv_list_replaced", "kv_expires_at"} <= layout.keys()
    assert s.stats()["schema_version"] == 3
    for key, value in V1_STRINGS.items():
        assert s.get(key) == value
    for key, items in V1_LISTS.items():
        assert s.list_range(key) == items and s.list_length(key) == len(items)
    assert s.list_range("thread:a", 3, 5) == V1_LISTS["thread:a"][3:5]
    assert sorted(s.scan()) == sorted([*V1_STRINGS, *V1_LISTS])
    other = open_file(db, "other")
    assert other.list_range("thread:a") == ["other-meta", "other-turn"]
    other.close()
    # The migrated lists keep growing from their length; the triggers still clean up.
    assert s.list_append("thread:b", "turn 1", max_items=50, ttl_seconds=60) == 2
    assert s.list_range("thread:b") == ["meta-b", "turn 1"]
    assert s.delete("thread:a")
    s.set_with_ttl("thread:c", 60, "a string now")
    assert s.list_create("gone", 60, "fresh")  # the expired v1 list makes way
    assert s.list_range("gone") == ["fresh"]
    c = raw(db)
    per_list = dict(c.execute("SELECT list_id, count(*) FROM item GROUP BY list_id").fetchall())
    c.close()
    ids = {row[2]: row[0] for row in dump(db)["kv"] if row[1] == 1}
    assert per_list.get(ids["thread:b"]) == 2 and per_list.get(ids["gone"]) == 1
    assert sum(per_list.values()) == 2 + 1 + 2  # thread:b, gone, other's thread:a
    s.close()


def test_second_open_of_a_migrated_file_changes_nothing(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_v1_file(db)
    open_file(db).close()
    before, layout, size = dump(db), schema(db), db.stat().st_size
    checksum = digest(db)

    def no_migration(self: SQLiteStorage, conn: sqlite3.Connection) -> None:
        raise AssertionError("migrated twice")

    monkeypatch.setattr(SQLiteStorage, "_migrate", no_migration)
    s = open_file(db)
    assert s.list_range("thread:a") == V1_LISTS["thread:a"]
    s.close()
    assert dump(db) == before and schema(db) == layout and db.stat().st_size == size
    assert digest(db) == checksum


def test_failed_migration_leaves_the_v1_file_as_it_was(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_v1_file(db)
    before, layout = dump(db), schema(db)
    steps = _sqlite._MIGRATIONS
    broken = (*steps[:-1], (*steps[-1], "INSERT INTO no_such_table VALUES (1)"))
    monkeypatch.setattr(_sqlite, "_MIGRATIONS", broken)
    with pytest.raises(StorageUnavailable, match="no_such_table"):
        open_file(db)
    assert dump(db) == before and schema(db) == layout  # one transaction: all or nothing
    c = raw(db)
    assert c.execute("PRAGMA user_version").fetchone()[0] == 1
    c.close()
    monkeypatch.undo()
    s = open_file(db)
    assert s.list_range("thread:c") == V1_LISTS["thread:c"]
    s.close()
    assert dump(db) == before


def test_concurrent_opens_migrate_once(db: Path) -> None:
    make_v1_file(db)
    before = dump(db)
    stores: list[SQLiteStorage] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def opener() -> None:
        barrier.wait()
        try:
            stores.append(open_file(db))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    assert dump(db) == before
    assert all(s.list_range("thread:a") == V1_LISTS["thread:a"] for s in stores)
    for s in stores:
        s.close()


# -- storage details ------------------------------------------------------------------------------
def test_append_writes_two_rows_whatever_the_length(store: SQLiteStorage) -> None:
    store.list_create("l", 60, "m")
    conn = store._conn()
    for i in range(200):
        before = conn.total_changes
        assert store.list_append("l", str(i), max_items=1000, ttl_seconds=60) == i + 2
        assert conn.total_changes - before == 2  # one UPDATE of kv + one INSERT of an item


def test_lists_leave_no_items_behind(store: SQLiteStorage, db: Path) -> None:
    def items() -> int:
        return int(store._conn().execute("SELECT count(*) FROM item").fetchone()[0])

    store.list_create("a", 60, "m")
    store.list_append("a", "x", max_items=5, ttl_seconds=60)
    store.set_with_ttl("a", 60, "string now")  # overwrite a list
    assert items() == 0 and store.get("a") == "string now"
    store.list_create("b", 60, "m")
    store.delete("b")
    assert items() == 0
    store.list_create("c", 0.01, "m")
    store.list_append("c", "x", max_items=5, ttl_seconds=0.01)
    time.sleep(0.03)
    assert store.list_create("c", 60, "fresh")  # replaces the expired list
    assert store.list_range("c") == ["fresh"] and items() == 1


def test_sweep_is_bounded_and_uses_the_index(store: SQLiteStorage) -> None:
    for i in range(250):
        store.set_with_ttl(f"old:{i}", 0.01, "v")
    store.list_create("old:list", 0.01, "m")
    store.set_with_ttl("live", 60, "v")
    time.sleep(0.03)
    conn = store._conn()
    count = "SELECT count(*) FROM kv"
    before = conn.execute(count).fetchone()[0]
    assert store.sweep(100) is True
    assert conn.execute(count).fetchone()[0] == before - 100
    while store.sweep(100):
        pass
    assert conn.execute(count).fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM item").fetchone()[0] == 0
    for sql, index in (
        ("WHERE scope IS NULL AND expires_at <= 0 ORDER BY expires_at", "kv_expires_at"),
        ("WHERE scope IS NOT NULL AND sweep_at <= 0 ORDER BY sweep_at", "kv_sweep"),
    ):
        plan = " ".join(
            str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM kv {sql} LIMIT 5")
        )
        assert index in plan and "SCAN kv " not in plan + " "
    assert store.stats()["expired"] == 251


def test_filed_list_expiry_is_filed_lazily_and_counted_exactly(store: SQLiteStorage) -> None:
    """An append pushes a filed list's expiry back without moving its kv_sweep entry; a sweep
    that finds it refreshed re-files it; a shorter TTL (expire, or an append with a shorter TTL)
    files it earlier at once. Counts and pages stay exact throughout."""
    conn = store._conn()

    def sweep_at(key: str) -> tuple[int, int]:
        row = conn.execute("SELECT sweep_at, expires_at FROM kv WHERE key = ?", (key,)).fetchone()
        return int(row[0]), int(row[1])

    store.list_create("a", 0.05, "m", scopes=("s",), score=1)
    store.list_create("b", 0.05, "m", scopes=("s", "t"), score=2)
    store.list_create("c", 0.05, "m", scopes=("s",), score=3)
    first = sweep_at("a")[0]
    store.list_append("a", "x", max_items=10, ttl_seconds=60, score=4)
    store.list_append_many("b", ["x", "y"], max_items=10, ttl_seconds=60, score=5)
    assert sweep_at("a")[0] == first < sweep_at("a")[1]  # not moved by the append
    time.sleep(0.08)  # past every first filing: a and b refreshed, c expired
    assert store.index_count("s") == 2 and store.index_count("t") == 1
    assert store.index_page("s", 10) == [(5, "b"), (4, "a")]
    while store.sweep(100):
        pass
    assert conn.execute("SELECT key FROM kv ORDER BY key").fetchall() == [("a",), ("b",)]
    assert sweep_at("a")[0] == sweep_at("a")[1]  # re-filed where it belongs now
    assert store.index_count("s") == 2 and store.index_count("t") == 1
    # Shorter TTLs file the list earlier at once: it never stays filed past its expiry.
    store.expire("a", 0.03)
    assert sweep_at("a")[0] == sweep_at("a")[1]
    store.list_append("b", "z", max_items=10, ttl_seconds=0.03, score=6)
    assert sweep_at("b")[0] == sweep_at("b")[1]
    time.sleep(0.05)
    assert store.index_count("s") == 0 and store.index_count("t") == 0
    assert store.index_page("s", 10) == []
    while store.sweep(100):
        pass
    assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 0
    assert store.stats()["expired"] == 3


def test_item_is_only_ever_reached_through_its_index(
    store: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.list_create("l", 60, "m")
    for i in range(20):
        store.list_append("l", f"turn {i}", max_items=100, ttl_seconds=60)
    conn = store._conn()
    reads: list[tuple[str, tuple[object, ...]]] = []
    real_read = store._read

    def record(sql: str, params: tuple[object, ...], key: str = "") -> list[Any]:
        reads.append((sql, params))
        return real_read(sql, params, key)

    monkeypatch.setattr(store, "_read", record)
    assert store.list_range("l", 3, 7) == [f"turn {i}" for i in range(2, 6)]
    assert store.list_range("l") == ["m", *(f"turn {i}" for i in range(20))]
    monkeypatch.undo()
    # The statements list_range ran, with their own parameters.
    for sql, params in reads:
        plan = " | ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "SEARCH item USING INDEX item_pos (list_id=? AND idx>? AND idx<?)" in plan, plan
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan  # no sort either
    # The triggers' statement (what delete, set_with_ttl and the sweep run on item).
    bodies = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'kv'"
        " AND name LIKE 'kv_list_%'"
    ).fetchall()
    assert len(bodies) == 2
    for (sql,) in bodies:
        body = sql[sql.index("BEGIN") + len("BEGIN") : sql.rindex("END")].strip().rstrip(";")
        assert body == "DELETE FROM item WHERE list_id = old.id"
        plan = " | ".join(
            str(r[-1])
            for r in conn.execute("EXPLAIN QUERY PLAN " + body.replace("old.id", "?"), (1,))
        )
        assert plan == "SEARCH item USING INDEX item_pos (list_id=?)", plan


def test_writes_sweep_on_the_side(store: SQLiteStorage) -> None:
    for i in range(300):
        store.set_with_ttl(f"old:{i}", 0.01, "v")
    time.sleep(0.03)
    for i in range(200):
        store.set_with_ttl(f"new:{i}", 60, "v")
    rows = store._conn().execute("SELECT count(*) FROM kv").fetchone()[0]
    assert rows == 200  # the backlog went in passes of 100 rows, one write apart


def test_stats(store: SQLiteStorage, db: Path) -> None:
    store.set_with_ttl("k", 60, "v")
    store.get("k")
    store.get("nope")
    stats = store.stats()
    assert stats["keys"] == 1 and stats["hits"] == 1 and stats["misses"] == 1
    assert stats["path"] == str(db) and stats["file_bytes"] > 0
    assert stats["url"] == f"sqlite:///{db}" and stats["namespace"] == "test"


def test_lone_surrogates_are_invalid_input(store: SQLiteStorage) -> None:
    with pytest.raises(InvalidInput, match="Unicode"):
        store.set_with_ttl("k", 60, "\ud800")
    with pytest.raises(InvalidInput, match="Unicode"):
        store.get("\udfff")


def test_one_connection_per_thread_all_closed(store: SQLiteStorage) -> None:
    def use() -> None:
        store.set_with_ttl(threading.current_thread().name, 60, "v")

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conns = [entry[2] for entry in store._conns]
    assert len(conns) >= 2
    store.close()
    for conn in conns:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(StorageUnavailable, match="closed"):
        store.list_length("x")
    with pytest.raises(StorageUnavailable, match="closed"):
        store.scan()


def test_disk_full_is_storage_unavailable(store: SQLiteStorage) -> None:
    store.set_with_ttl("k", 60, "v")
    store._conn().execute("PRAGMA max_page_count = 20")  # SQLite answers SQLITE_FULL past it
    with pytest.raises(StorageUnavailable, match="full"):  # noqa: PT012
        for i in range(100):
            store.set_with_ttl(f"big:{i}", 60, "x" * 20_000)
    assert store.get("k") == "v"


# -- locks ----------------------------------------------------------------------------------------
def hold_write_lock(db: Path, seconds: float) -> threading.Thread:
    """Another connection takes the write lock now and keeps it for ``seconds``."""
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(seconds)
        holder.execute("COMMIT")
        holder.close()

    t = threading.Thread(target=release)
    t.start()
    return t


def test_busy_writer_waits_then_succeeds(store: SQLiteStorage, db: Path) -> None:
    store.set_with_ttl("warm", 60, "v")
    store.list_create("l", 60, "m")
    t = hold_write_lock(db, 0.3)
    t0 = time.monotonic()
    store.set_with_ttl("k", 60, "v")
    assert time.monotonic() - t0 >= 0.2
    t.join()
    t = hold_write_lock(db, 0.3)
    assert store.list_append("l", "x", max_items=5, ttl_seconds=60) == 2
    t.join()
    assert store.get("k") == "v"


def test_lock_held_too_long_gives_storage_unavailable_in_bounded_time(db: Path) -> None:
    s = open_file(db, busy_timeout_ms=300)
    t = hold_write_lock(db, 1.0)
    try:
        for call in (
            lambda: s.set_with_ttl("k", 60, "v"),
            lambda: s.list_create("l", 60, "m"),
        ):
            t0 = time.monotonic()
            with pytest.raises(StorageUnavailable, match="locked by another connection") as info:
                call()
            assert 0.25 < time.monotonic() - t0 < 1.0
            assert not isinstance(info.value, sqlite3.Error)
        assert s.get("k") is None  # readers are never blocked (WAL)
    finally:
        t.join()
    s.set_with_ttl("k", 60, "v")
    s.close()


# -- fork -----------------------------------------------------------------------------------------
def test_child_after_fork_opens_its_own_connection(store: SQLiteStorage) -> None:
    store.set_with_ttl("parent", 60, "p")
    store.list_create("l", 60, "m")
    parent_conn = store._conn()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            assert store.get("parent") == "p"
            assert store._conn() is not parent_conn
            store.set_with_ttl("child", 60, "c")
            assert store.list_append("l", "from child", max_items=9, ttl_seconds=60) == 2
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._conn() is parent_conn
    assert store.get("child") == "c"
    assert store.list_range("l") == ["m", "from child"]


# -- permissions ----------------------------------------------------------------------------------
def run_unprivileged(fn: Callable[[], str]) -> str:
    """Run ``fn`` in a forked child that cannot bypass file permissions (root drops to nobody)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            out = fn()
        except BaseException as exc:
            out = f"{type(exc).__name__}: {exc}"
        os.write(write_end, out.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory an unprivileged child can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="threadstore-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _open_and_write(path: Path) -> Callable[[], str]:
    def attempt() -> str:
        s = SQLiteStorage(path, namespace="test")
        s.set_with_ttl("k", 60, "v")
        s.close()
        return "opened"

    return attempt


def test_read_only_file_is_storage_unavailable(public_dir: Path) -> None:
    path = public_dir / "threads.db"
    open_file(path).close()
    path.chmod(0o444)
    out = run_unprivileged(_open_and_write(path))
    assert out.startswith("StorageUnavailable: cannot open") and "Permission denied" in out


def test_unwritable_directory_is_storage_unavailable(public_dir: Path) -> None:
    path = public_dir / "threads.db"
    open_file(path).close()
    path.chmod(0o666)  # the file is writable, but SQLite cannot create -wal/-shm beside it
    public_dir.chmod(0o555)
    out = run_unprivileged(_open_and_write(path))
    assert out.startswith("StorageUnavailable:") and "directory must be writable" in out, out


def test_uncreatable_directory_is_storage_unavailable(public_dir: Path) -> None:
    public_dir.chmod(0o555)
    out = run_unprivileged(_open_and_write(public_dir / "sub" / "threads.db"))
    assert out.startswith("StorageUnavailable: cannot create directory"), out


# -- processes ------------------------------------------------------------------------------------
def test_processes_append_and_set_concurrently(db: Path) -> None:
    s = open_file(db)
    for name in ("shared:a", "shared:b"):
        s.list_create(name, 600, "meta")
    n_procs, per_proc = 4, 150
    url = f"sqlite:///{db}"
    procs = [spawn("writer", url, str(w), str(per_proc)) for w in range(n_procs)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [o.strip() for o in outputs] == ["done"] * n_procs
    assert all(p.returncode == 0 for p in procs)
    for name in ("shared:a", "shared:b"):
        items = s.list_range(name)
        assert items[0] == "meta" and len(items) == 1 + n_procs * per_proc
        assert len(set(items)) == len(items)
        for w in range(n_procs):
            mine = [int(x.split(":")[1]) for x in items[1:] if x.split(":")[0] == str(w)]
            assert mine == list(range(per_proc))
        owners = [x.split(":")[0] for x in items[1:]]
        switches = sum(a != b for a, b in itertools.pairwise(owners))
        # Run one after the other, the writers would leave n_procs blocks (n_procs - 1 switches).
        assert switches > n_procs - 1, "the writers did not actually run at the same time"
    assert len(list(s.scan("k:"))) == n_procs * per_proc
    assert s.get(f"k:3:{per_proc - 1}") == f"3:{per_proc - 1}"
    s.close()


def test_sigkill_mid_stream_loses_no_acknowledged_write(db: Path) -> None:
    rng = random.Random(1234)
    open_file(db).close()
    url = f"sqlite:///{db}"
    kills = 12
    for round_ in range(kills):
        name = f"stream:{round_}"
        p = spawn("stream", url, name)
        assert p.stdout is not None
        target = rng.randint(1, 400)  # kill after a random number of acknowledgements ...
        acked = -1
        while acked < target:
            line = p.stdout.readline()
            assert line, "the worker stopped on its own"
            acked = int(line)
        time.sleep(rng.uniform(0, 0.01))  # ... plus a random slice of time
        p.send_signal(signal.SIGKILL)
        rest = p.stdout.read()  # acknowledgements written before the kill landed
        p.wait()
        for line in rest.split():
            acked = int(line)
        p.stdout.close()
        p.stdin and p.stdin.close()
        c = raw(db)
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        c.close()
        s = open_file(db)
        items = s.list_range(name)
        assert items[0] == "head"
        numbers = [int(x) for x in items[1:]]
        assert numbers == list(range(len(numbers)))  # nothing duplicated, nothing out of order
        assert len(numbers) >= acked + 1  # every acknowledged append is there
        assert all(s.exists(f"s:{name}:{i}") for i in range(acked))
        s.close()


def test_read_after_write_across_processes(db: Path) -> None:
    s = open_file(db)
    p = spawn("serve", f"sqlite:///{db}")
    assert p.stdin is not None and p.stdout is not None
    try:
        for i in range(40):
            s.set_with_ttl("from-parent", 60, f"p{i}")
            p.stdin.write("get from-parent\n")
            p.stdin.flush()
            assert json.loads(p.stdout.readline()) == f"p{i}"
            p.stdin.write(f"set from-child c{i}\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "ok"
            assert s.get("from-child") == f"c{i}"
        p.stdin.write("quit\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()
        p.wait()
    s.close()


# -- size under churn -----------------------------------------------------------------------------
def test_file_size_plateaus_under_churn(db: Path) -> None:
    """Rounds of 700 keys (and 100 lists) with a 50 ms TTL, each round written once the one
    before has expired: the file grows while the first rounds fill it, then the sweeps the
    writes make free pages as fast as new keys need them and the size stays flat. Rounds, not
    a timed loop, so a slow machine writes the same data and the check means the same."""
    s = open_file(db)
    value = "x" * 2048
    sizes: list[int] = []
    for round_ in range(12):
        for i in range(700):
            s.set_with_ttl(f"churn:{round_}:{i}", 0.05, value)
            if i % 7 == 0:
                s.list_create(f"list:{round_}:{i}", 0.05, value)
                s.list_append(f"list:{round_}:{i}", value, max_items=5, ttl_seconds=0.05)
        written = time.monotonic()
        sizes.append(db.stat().st_size)
        while time.monotonic() < written + 0.06:  # until this round has expired
            time.sleep(0.01)
    # After the second round the file grows by no more than 10 % (without the sweeps it would
    # grow by a round's worth, about 3.4 MB, every round).
    assert max(sizes[2:]) <= sizes[2] * 1.1 + 256 * 1024, sizes
    assert (db.parent / "threads.db-wal").stat().st_size <= 16 << 20
    assert s.stats()["keys"] < 2000
    s.close()


# -- schema v3: the activity index -------------------------------------------------------------
_V3_OBJECTS = (
    "TRIGGER kv_ix_deleted", "TRIGGER kv_ix_replaced", "TRIGGER ix_added", "TRIGGER ix_removed",
    "TRIGGER kv_scope_added", "TRIGGER kv_scope_removed", "TRIGGER kv_scope_changed",
    "TRIGGER kv_rescored", "TRIGGER kv_sweep_early", "INDEX kv_sweep",
    "INDEX kv_page", "INDEX kv_expires_at", "TABLE ix", "TABLE scope",
)  # fmt: skip


def make_v2_file_with_threads(path: Path) -> dict[str, list[str]]:
    """A version-2 file holding real threads (two namespaces, one expired thread, one damaged,
    one string under a thread key), as a v2 release left it: threads written through the API,
    then every v3 object dropped. Returns the live thread ids per namespace, newest first."""
    expected: dict[str, list[str]] = {}
    for namespace in ("test", "other"):
        s = open_file(path, namespace)
        store = ThreadStore(s, ttl_seconds=600, max_turns=50)
        ids = [store.create_thread(f"tool{i}") for i in range(6)]
        for i, tid in enumerate(ids):
            for n in range(i % 3):
                store.add_turn(tid, "user", f"turn {n}")
        store.add_turn(ids[0], "assistant", "the most recent activity")
        threads = [store.require_thread(tid) for tid in ids]
        order = [
            t.thread_id
            for t in sorted(threads, key=lambda t: (t.last_updated_at, t.thread_id), reverse=True)
        ]
        assert order[0] == ids[0]
        if namespace == "test":
            gone = ThreadStore(s, ttl_seconds=0.01, max_turns=5).create_thread("short")
            s.list_create("thread:" + str(uuid.uuid4()), 600, "{not json")
            s.set_with_ttl("thread:" + str(uuid.uuid4()), 600, "a string")
            assert gone not in order
        expected[namespace] = order
        s.close()
    c = raw(path)
    c.execute("BEGIN")
    for obj in _V3_OBJECTS:
        c.execute(f"DROP {obj}")
    c.execute("ALTER TABLE kv DROP COLUMN scope")
    c.execute("ALTER TABLE kv DROP COLUMN score")
    c.execute("ALTER TABLE kv DROP COLUMN sweep_at")
    c.execute("CREATE INDEX kv_expires_at ON kv (expires_at)")  # v2's, over every key
    c.execute("PRAGMA user_version = 2")
    c.execute("COMMIT")
    c.close()
    time.sleep(0.02)  # the short thread's TTL has passed
    return expected


def test_v2_file_with_threads_is_migrated_and_its_threads_listed(db: Path) -> None:
    expected = make_v2_file_with_threads(db)
    layout = {name for _, name, _ in schema(db)}
    assert "ix" not in layout and "scope" not in layout
    before = dump(db)
    for namespace, order in expected.items():
        s = open_file(db, namespace)
        assert s.stats()["schema_version"] == SCHEMA_VERSION == 3
        store = ThreadStore(s, ttl_seconds=600, max_turns=50)
        assert store.count_threads() == len(order)
        assert [t.thread_id for t in store.list_threads().threads] == order
        first = store.list_threads(limit=2)
        rest = store.list_threads(limit=10, cursor=first.next_cursor)
        assert [t.thread_id for t in first.threads + rest.threads] == order
        # the migrated threads keep moving with new turns
        store.add_turn(order[-1], "user", "back to the top")
        assert store.list_threads(limit=1).threads[0].thread_id == order[-1]
        s.close()
    c = raw(db)
    assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    c.close()
    after = dump(db)
    assert after["namespace"] == before["namespace"]


def test_v2_to_v3_migration_is_one_transaction(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_v2_file_with_threads(db)
    before, layout = dump(db), schema(db)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO scope (ns, name) VALUES (1, 'half-done')")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(_sqlite._MIGRATION_HOOKS, 3, broken)
    with pytest.raises(ThreadstoreError):
        open_file(db)
    assert dump(db) == before and schema(db) == layout  # nothing of v3 was left behind
    c = raw(db)
    assert c.execute("PRAGMA user_version").fetchone()[0] == 2
    c.close()
    monkeypatch.undo()
    s = open_file(db)
    assert ThreadStore(s, ttl_seconds=600, max_turns=50).count_threads() == 6
    s.close()


def test_index_statements_use_their_indexes(store: SQLiteStorage) -> None:
    store.list_create("l", 60, "m", scopes=("all", "more"), score=1)
    conn = store._conn()
    expected = {
        "page": ["USING INDEX kv_page (scope=? AND (score,key)<(?,?))",
                 "USING COVERING INDEX ix_page (scope=? AND (score,key)<(?,?))"],
        "count": ["SEARCH kv USING INDEX kv_sweep (sweep_at<?)"],
        "sweep": ["SEARCH kv USING INDEX kv_sweep (sweep_at<?)"],
        "sweep unfiled": ["SEARCH kv USING INDEX kv_expires_at (expires_at<?)"],
        "append": ["SEARCH ix USING COVERING INDEX ix_list (list_id=?)"],
    }  # fmt: skip
    statements = {
        "page": "SELECT * FROM (SELECT kv.score, kv.key FROM kv WHERE kv.scope = ?"
        " AND kv.expires_at > ? AND (kv.score, kv.key) < (?, ?)"
        " ORDER BY kv.score DESC, kv.key DESC LIMIT 5)"
        " UNION ALL SELECT * FROM (SELECT ix.score, ix.key FROM ix CROSS JOIN kv"
        " ON kv.id = ix.list_id WHERE ix.scope = ? AND kv.expires_at > ?"
        " AND (ix.score, ix.key) < (?, ?) ORDER BY ix.score DESC, ix.key DESC LIMIT 5)"
        " ORDER BY 1 DESC, 2 DESC LIMIT 5",
        "count": "SELECT count(*) FROM kv WHERE kv.scope IS NOT NULL AND kv.sweep_at <= ?"
        " AND kv.expires_at <= ? AND +kv.scope = ?",
        "sweep": "SELECT id, expires_at <= ? FROM kv WHERE scope IS NOT NULL"
        " AND sweep_at <= ? ORDER BY sweep_at LIMIT ?",
        "sweep unfiled": "SELECT id FROM kv WHERE scope IS NULL AND expires_at <= ?"
        " ORDER BY expires_at LIMIT ?",
        "append": "UPDATE ix SET score = ? WHERE list_id = ?",
    }
    for name, sql in statements.items():
        params = (1,) * sql.count("?")
        plan = " | ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        for part in expected[name]:
            assert part in plan, (name, plan)
        # no table walked whole (merging the two short pages sorts at most 2 x limit rows)
        assert "SCAN kv" not in plan and "SCAN ix" not in plan, (name, plan)
