"""The floors, the peers and the original design, each behind the few methods the workloads call.

String stores offer ``get(key)`` and ``set_with_ttl(key, ttl_seconds, value)``; list stores
``list_create(key, ttl_seconds, first)``, ``list_append(key, value)`` and ``list_range(key)``.

The original design is re-implemented from its description (NOTES.md): a dict of
``(value, expires_at)`` under one lock, swept by a cleanup thread that scans every key while
holding that lock, with a DEBUG log line built on every ``get`` hit and ``set_with_ttl``;
conversations stored as one JSON document per thread under ``thread:{uuid}``, re-read,
extended and rewritten (``setex``) on every turn. On Redis the same conversation layer runs over
plain GET/SETEX.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

# -- string stores -------------------------------------------------------------------------------


class KV(Protocol):
    def get(self, key: str) -> str | None: ...

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None: ...


class FloorDictLock:
    """The floor: a plain dict and a threading.Lock, wrapped in methods. No expiry at all."""

    name = "floor dict+Lock"

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        with self._lock:
            self._data[key] = value

    def list_create(self, key: str, ttl_seconds: float, first: str) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = [first]
            return True

    def list_append(self, key: str, value: str) -> int:
        with self._lock:
            items = self._data.get(key)
            if items is None:
                return 0
            items.append(value)
            return len(items)

    def list_range(self, key: str) -> list[str]:
        with self._lock:
            items = self._data.get(key)
            return list(items) if items is not None else []

    def close(self) -> None:
        self._data.clear()


class TTLCacheLock:
    """cachetools.TTLCache (one TTL for the whole cache) behind a threading.Lock."""

    name = "cachetools TTLCache+Lock"

    def __init__(
        self,
        maxsize: int = 10_000_000,
        ttl: float = 3 * 3600.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        from cachetools import TTLCache

        self._cache: TTLCache[str, str] = TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._cache.get(key)

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        with self._lock:
            self._cache[key] = value

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.clear()


_original_log = logging.getLogger("benchmarks.original_design")


class OriginalKV:
    """The original in-memory store: ``{key: (value, expires_at)}`` under one lock.

    Reads check the expiry and drop an expired key; a cleanup thread (every ``cleanup_interval``
    seconds, 300 in the original) walks the whole dict under the lock and deletes what expired.
    Like the original, every stored key and every hit logs at DEBUG with an f-string, inside the
    lock: at the default WARNING level the record is dropped, but the message is built first,
    and that cost was part of the original (the issues' "original module" figures include it).
    ``clock`` is injectable so a benchmark can age keys without waiting.
    """

    name = "original design"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        cleanup_interval: float | None = None,
    ) -> None:
        self._store: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._stop = threading.Event()
        self.lock_holds_ns: list[int] = []
        self._cleaner: threading.Thread | None = None
        if cleanup_interval is not None:
            self._cleaner = threading.Thread(
                target=self._cleanup_loop, args=(cleanup_interval,), daemon=True
            )
            self._cleaner.start()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._store.get(key)
            if item is not None:
                value, expires_at = item
                if self._clock() < expires_at:
                    _original_log.debug(f"Retrieved key {key}")
                    return value
                del self._store[key]
                _original_log.debug(f"Key {key} expired and removed")
        return None

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        with self._lock:
            self._store[key] = (value, self._clock() + ttl_seconds)
            _original_log.debug(f"Stored key {key} with TTL {ttl_seconds}s")

    def setex(self, key: str, ttl_seconds: float, value: str) -> None:
        self.set_with_ttl(key, ttl_seconds, value)

    def cleanup_expired(self) -> int:
        """One cleanup pass, as the original did it; returns nanoseconds the lock was held."""
        now = self._clock()
        with self._lock:
            t0 = time.perf_counter_ns()
            expired = [k for k, (_, expires_at) in self._store.items() if expires_at < now]
            for k in expired:
                del self._store[k]
            held = time.perf_counter_ns() - t0
        self.lock_holds_ns.append(held)
        return held

    def _cleanup_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.cleanup_expired()

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._stop.set()
        if self._cleaner is not None:
            self._cleaner.join(timeout=5)
        self._store.clear()


class DiskCacheKV:
    """diskcache.Cache (SQLite underneath, cross-process), with a TTL on every set."""

    name = "diskcache"

    def __init__(self, directory: Path) -> None:
        import diskcache

        self._cache = diskcache.Cache(str(directory))

    def get(self, key: str) -> str | None:
        value: str | None = self._cache.get(key)
        return value

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        self._cache.set(key, value, expire=ttl_seconds)

    def bulk(self) -> Any:
        """A transaction context for fast loading (diskcache's own ``transact``)."""
        return self._cache.transact()

    def close(self) -> None:
        self._cache.close()


class RawSQLite:
    """The SQLite floor: sqlite3 in WAL mode, synchronous=NORMAL, autocommit statements.

    One connection per thread (sqlite3 connections are not shared between threads). Strings live
    in ``kv(key PRIMARY KEY, value, expires_at)``; lists in ``items(key, idx, value)``.
    """

    name = "raw sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        db = self._db()
        db.execute(
            "CREATE TABLE IF NOT EXISTS kv"
            " (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS items (key TEXT NOT NULL, idx INTEGER NOT NULL,"
            " value TEXT NOT NULL, PRIMARY KEY (key, idx)) WITHOUT ROWID"
        )

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def get(self, key: str) -> str | None:
        row = (
            self._db()
            .execute("SELECT value FROM kv WHERE key = ? AND expires_at > ?", (key, time.time()))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, time.time() + ttl_seconds),
        )

    def load(self, pairs: list[tuple[str, str]], ttl_seconds: float) -> None:
        """Bulk load in one transaction (set-up only, never timed)."""
        db = self._db()
        expires_at = time.time() + ttl_seconds
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
            [(k, v, expires_at) for k, v in pairs],
        )
        db.execute("COMMIT")

    def list_create(self, key: str, ttl_seconds: float, first: str) -> bool:
        cur = self._db().execute(
            "INSERT OR IGNORE INTO items (key, idx, value) VALUES (?, 0, ?)", (key, first)
        )
        return cur.rowcount == 1

    def list_append(self, key: str, value: str) -> int:
        # One autocommit statement: atomic, like the backend's append, minus TTL and the cap.
        self._db().execute(
            "INSERT INTO items (key, idx, value)"
            " SELECT key, idx + 1, ? FROM items WHERE key = ? ORDER BY idx DESC LIMIT 1",
            (value, key),
        )
        return 1

    def list_range(self, key: str) -> list[str]:
        rows = (
            self._db()
            .execute("SELECT value FROM items WHERE key = ? ORDER BY idx", (key,))
            .fetchall()
        )
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()


class RawRedis:
    """The Redis floor: redis-py (hiredis parser) commands, one per call, no scripting."""

    name = "raw redis-py"

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.client.ping()

    def get(self, key: str) -> str | None:
        value: str | None = self.client.get(key)
        return value

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        self.client.set(key, value, px=max(1, round(ttl_seconds * 1000)))

    def setex(self, key: str, ttl_seconds: float, value: str) -> None:
        self.set_with_ttl(key, ttl_seconds, value)

    def load(self, pairs: list[tuple[str, str]], ttl_seconds: float) -> None:
        """Bulk load with pipelines (set-up only, never timed)."""
        px = max(1, round(ttl_seconds * 1000))
        for start in range(0, len(pairs), 1000):
            pipe = self.client.pipeline(transaction=False)
            for k, v in pairs[start : start + 1000]:
                pipe.set(k, v, px=px)
            pipe.execute()

    def list_create(self, key: str, ttl_seconds: float, first: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, first)
        pipe.pexpire(key, max(1, round(ttl_seconds * 1000)))
        pipe.execute()
        return True

    def list_append(self, key: str, value: str, ttl_seconds: float = 3 * 3600.0) -> int:
        # RPUSHX + PEXPIRE in one pipeline: one round trip, no cap (the backend also caps).
        pipe = self.client.pipeline(transaction=False)
        pipe.rpushx(key, value)
        pipe.pexpire(key, max(1, round(ttl_seconds * 1000)))
        length, _ = pipe.execute()
        return int(length)

    def list_range(self, key: str) -> list[str]:
        items: list[str] = self.client.lrange(key, 0, -1)
        return items

    def close(self) -> None:
        self.client.close()


# -- the original conversation layer -------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class OriginalTurn(BaseModel):
    role: str
    content: str
    timestamp: str
    files: list[str] | None = None
    images: list[str] | None = None
    tool_name: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    model_metadata: dict[str, Any] | None = None


class OriginalThread(BaseModel):
    thread_id: str
    parent_thread_id: str | None = None
    created_at: str
    last_updated_at: str
    tool_name: str
    turns: list[OriginalTurn] = Field(default_factory=list)
    initial_context: dict[str, Any] = Field(default_factory=dict)


class SetexKV(Protocol):
    def get(self, key: str) -> str | None: ...

    def setex(self, key: str, ttl_seconds: float, value: str) -> None: ...


class OriginalConversations:
    """The original conversation layer: a whole thread as one JSON blob, rewritten per turn.

    ``add_turn`` is read-modify-write without any lock: GET, parse, append, serialise, SETEX.
    Its cost grows with the thread, and two writers racing lose one of the two turns.
    """

    name = "original design"

    def __init__(
        self, kv: SetexKV, *, ttl_seconds: float = 3 * 3600.0, max_turns: int = 50
    ) -> None:
        self.kv = kv
        self.ttl_seconds = ttl_seconds
        self.max_turns = max_turns

    def create_thread(
        self,
        tool_name: str,
        initial_context: dict[str, Any] | None = None,
        parent_thread_id: str | None = None,
    ) -> str:
        thread_id = str(uuid.uuid4())
        now = _now_iso()
        thread = OriginalThread(
            thread_id=thread_id,
            parent_thread_id=parent_thread_id,
            created_at=now,
            last_updated_at=now,
            tool_name=tool_name,
            initial_context=initial_context or {},
        )
        self.kv.setex(f"thread:{thread_id}", self.ttl_seconds, thread.model_dump_json())
        return thread_id

    def get_thread(self, thread_id: str) -> OriginalThread | None:
        raw = self.kv.get(f"thread:{thread_id}")
        return None if raw is None else OriginalThread.model_validate_json(raw)

    def add_turn(
        self,
        thread_id: str,
        role: str,
        content: str,
        *,
        files: list[str] | None = None,
        tool_name: str | None = None,
    ) -> bool:
        thread = self.get_thread(thread_id)
        if thread is None or len(thread.turns) >= self.max_turns:
            return False
        thread.turns.append(
            OriginalTurn(
                role=role, content=content, timestamp=_now_iso(), files=files, tool_name=tool_name
            )
        )
        thread.last_updated_at = _now_iso()
        self.kv.setex(f"thread:{thread_id}", self.ttl_seconds, thread.model_dump_json())
        return True
