"""The SQLite backend (``sqlite:///path/to/threads.db``): one file shared by every process on a
machine, in WAL mode, surviving restarts.

Layout (schema version 3, kept in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the
file as threadstore's)::

    namespace(id, name)                       one small integer per namespace
    kv(id, ns, key, value, length, expires_at, scope, score, sweep_at)
        UNIQUE(ns, key); INDEX kv_page(scope, score, key) WHERE scope NOT NULL
        INDEX kv_expires_at(expires_at) WHERE scope IS NULL
        INDEX kv_sweep(sweep_at) WHERE scope NOT NULL
        a string has value NOT NULL, length NULL; a list has value NULL, length = items
    item(list_id, idx, value)                 a rowid table, list_id = kv.id
        UNIQUE INDEX item_pos(list_id, idx)
    scope(id, ns, name, n)                    an activity index scope; n = its entries
    ix(scope, list_id, key, score)
        PRIMARY KEY(scope, list_id); INDEX ix_page(scope, score, key); INDEX ix_list(list_id)

The activity index (notes/index.md). A list's first scope and its score live in its own ``kv``
row (``kv.scope``, ``kv.score``, the partial index ``kv_page``): re-scoring it is part of the
``UPDATE kv`` an append makes anyway, and moves one index entry. Further scopes (an owner's, say)
are rows of ``ix``, re-scored by a trigger on ``kv.score`` (lists without a first scope skip
it, so an unfiled list's append does what it did before the index). Triggers keep
``ix`` in step with ``kv`` (a list deleted, or turned into a string, leaves every scope in the
same statement) and keep ``scope.n``. A page merges two ordered index walks (``kv_page`` and
``ix_page``, each at most one page long) and checks each candidate's expiry in ``kv``; a count
is ``n`` less the scope's lists expired and not swept yet (a ``kv_sweep`` range). Expired
entries leave with their ``kv`` rows, in the bounded sweeps.

A filed list's expiry is filed lazily, as the memory backend's buckets: ``kv_sweep`` holds
``sweep_at``, never later than ``expires_at`` (a trigger files it earlier when a TTL shrinks).
An append pushes the expiry back without moving that entry, so re-scoring (one ``kv_page``
entry moved) is the only index work an append of a filed list adds; a sweep that finds a list
refreshed files it again where it now belongs. Every commit writes the pages it changed to the
WAL: an append of an unfiled list moves its ``kv_expires_at`` entry, one of a filed list its
``kv_page`` entry, so both write about as many pages (6.2 against 5.9 per commit, measured).

Appending is one ``UPDATE kv ... RETURNING`` plus one ``INSERT INTO item`` in one
``BEGIN IMMEDIATE`` transaction: O(1), earlier items are never rewritten. Two triggers delete a
list's items in the same statement that deletes its ``kv`` row or turns it into a string, so
``set_with_ttl`` stays a single upsert. Every access to ``item`` (range reads, appends, the
triggers) is a search of ``item_pos``. ``item`` is a rowid table rather than WITHOUT ROWID
because items (conversation turns) are often KBs, and SQLite advises WITHOUT ROWID only for rows
under about 1/20 of a page: whole rows are then keys of one b-tree, and appends cost more. Here
the index holds only the two small integers.

Migrations run when a store opens an older file, in one ``BEGIN IMMEDIATE`` transaction (a new
file runs them all). Version 1 had ``item`` WITHOUT ROWID, PRIMARY KEY(list_id, idx); the step to
2 copies every item into the new table, so it takes time and disk space in proportion to the
items stored, other writers wait for it, and the old table's pages are left free for reuse. The
step to 3 adds the activity index and files every live thread (``thread:*`` lists, in every
namespace) under scope ``threads``, scored by its last activity read from its JSON: the one place
this module knows what a thread looks like. A file of version N is refused by threadstore
releases that know only versions below N.

Expiry. ``expires_at`` is wall-clock milliseconds (``time.time()``), because every process
sharing the file must agree on it: keep the clocks of those processes in sync. Every read filters
on ``expires_at > now``, so an expired key is never returned. Rows are removed by bounded
incremental sweeps that walk ``kv_expires_at`` and ``kv_sweep`` (at most ``SWEEP_BATCH`` rows
of each a pass, every ``SWEEP_EVERY`` writes of this store object, or sooner while a backlog
remains) and by ``sweep()``; no request ever scans the table. Freed pages are reused, so under
steady churn the file stops growing (see tests/test_sqlite.py::test_file_size_plateaus_under_churn).

Concurrency. One connection per thread, opened lazily and re-opened in a child after ``fork()``
(the inherited ones are left untouched, as SQLite requires). Writes of one statement run as an
autocommit statement, which takes the write lock when it starts, exactly like ``BEGIN IMMEDIATE``
but in one round trip; writes of several statements run in ``BEGIN IMMEDIATE``. Threads of one
process queue on a Python lock before taking SQLite's write lock (microseconds instead of
SQLite's millisecond busy sleeps); processes wait in SQLite's busy handler and then in a bounded
retry loop with randomized backoff, for ``busy_timeout_ms`` in all; past that the call raises
StorageUnavailable. Readers never block writers (WAL).

Durability. ``synchronous=NORMAL`` (default): a committed write survives the process being
killed at any moment; after a power loss or OS crash the last few commits may be lost but the
file stays consistent. ``synchronous=FULL``: every commit is fsynced (slower).

Errors. sqlite3 exceptions never escape: busy past the deadline, disk full, read-only file or
directory, I/O errors and a closed store raise StorageUnavailable; a file that is not a SQLite
database, a corrupt schema, another application's database or one from a newer threadstore
raises ConfigError at open and the file is left untouched; corruption found later raises
CorruptData.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from threading import get_ident
from typing import Any, Final, Literal, TypeVar, cast
from urllib.parse import parse_qsl, quote

from . import _forking
from ._config import DEFAULT_NAMESPACE, check_namespace
from ._errors import (
    ConfigError,
    CorruptData,
    InvalidInput,
    StorageUnavailable,
    ThreadstoreError,
    WrongType,
)
from ._ids import ALL_THREADS, KEY_PREFIX
from ._storage import (
    APPEND_FULL,
    APPEND_MISSING,
    ListEnds,
    Storage,
    check_key,
    check_max_items,
    check_page,
    check_prefix,
    check_range,
    check_scope,
    check_scopes,
    check_score,
    check_value,
    check_values,
    ttl_ms,
)

log = logging.getLogger("threadstore")

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]

SCHEMA_VERSION: Final = 3
APPLICATION_ID: Final = 0x54487264  # "THrd"
DEFAULT_BUSY_TIMEOUT_MS: Final = 5000
MAX_BUSY_TIMEOUT_MS: Final = 600_000
SWEEP_EVERY: Final = 64  # writes of one store object between two expiry passes
SWEEP_BATCH: Final = 100  # kv rows deleted at most per pass
SCAN_PAGE: Final = 500  # keys read per statement by scan()
JOURNAL_SIZE_LIMIT: Final = 8 << 20  # the -wal file is truncated back to 8 MiB after checkpoints
_MAX_INDEX: Final = 1 << 62
_MEMORY: Final = ":memory:"
_URL_OPTIONS: Final = ("synchronous", "busy_timeout_ms")

# Primary result codes (sqlite3.h).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26

# Both triggers delete a list's items along with its kv row (deleted, or turned into a string).
# They read the same in every schema version so far.
_ITEM_TRIGGERS: Final = (
    """CREATE TRIGGER kv_list_deleted AFTER DELETE ON kv WHEN old.length IS NOT NULL
    BEGIN DELETE FROM item WHERE list_id = old.id; END""",
    """CREATE TRIGGER kv_list_replaced AFTER UPDATE OF length ON kv
    WHEN old.length IS NOT NULL AND new.length IS NULL
    BEGIN DELETE FROM item WHERE list_id = old.id; END""",
)

# Each entry upgrades the schema by one version: _MIGRATIONS[v] takes a file from v to v + 1.
# A new file runs them all, in one transaction like any migration.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE namespace (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE kv (
            id INTEGER PRIMARY KEY,
            ns INTEGER NOT NULL,
            key TEXT NOT NULL,
            value TEXT,
            length INTEGER,
            expires_at INTEGER NOT NULL,
            UNIQUE (ns, key)
        )""",
        "CREATE INDEX kv_expires_at ON kv (expires_at)",
        """CREATE TABLE item (
            list_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (list_id, idx)
        ) WITHOUT ROWID""",
        *_ITEM_TRIGGERS,
    ),
    # v1 -> v2: item becomes a rowid table plus a unique index. A WITHOUT ROWID table keeps whole
    # rows as b-tree keys, which suits rows far smaller than a page; turns are often KBs, and with
    # ~1 KB turns v1 appends were ~1.6x slower and files ~3x larger. SQLite refuses to rename a
    # table while a trigger names a table that does not exist, so the triggers go first and come
    # back last, unchanged.
    (
        "DROP TRIGGER kv_list_deleted",
        "DROP TRIGGER kv_list_replaced",
        """CREATE TABLE item_v2 (
            list_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            value TEXT NOT NULL
        )""",
        # In key order, so each list's rows stay together in the new table.
        "INSERT INTO item_v2 (list_id, idx, value)"
        " SELECT list_id, idx, value FROM item ORDER BY list_id, idx",
        "DROP TABLE item",
        "ALTER TABLE item_v2 RENAME TO item",
        "CREATE UNIQUE INDEX item_pos ON item (list_id, idx)",
        *_ITEM_TRIGGERS,
    ),
    # v2 -> v3: the activity index (notes/index.md), then _backfill_index files existing threads.
    (
        """CREATE TABLE scope (
            id INTEGER PRIMARY KEY,
            ns INTEGER NOT NULL,
            name TEXT NOT NULL,
            n INTEGER NOT NULL DEFAULT 0,
            UNIQUE (ns, name)
        )""",
        """CREATE TABLE ix (
            scope INTEGER NOT NULL,
            list_id INTEGER NOT NULL,
            key TEXT NOT NULL,
            score INTEGER NOT NULL,
            PRIMARY KEY (scope, list_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX ix_page ON ix (scope, score, key)",
        "CREATE INDEX ix_list ON ix (list_id)",
        "ALTER TABLE kv ADD COLUMN scope INTEGER",
        "ALTER TABLE kv ADD COLUMN score INTEGER",
        "ALTER TABLE kv ADD COLUMN sweep_at INTEGER",
        "CREATE INDEX kv_page ON kv (scope, score, key) WHERE scope IS NOT NULL",
        # A filed list's expiry is filed lazily (as the memory backend's buckets): kv_sweep holds
        # sweep_at, never later than its expiry, so an append (which only pushes the expiry
        # back) moves no expiry entry; the sweeps re-file the lists they find refreshed.
        "DROP INDEX kv_expires_at",
        "CREATE INDEX kv_expires_at ON kv (expires_at) WHERE scope IS NULL",
        "CREATE INDEX kv_sweep ON kv (sweep_at) WHERE scope IS NOT NULL",
        """CREATE TRIGGER kv_sweep_early AFTER UPDATE OF expires_at ON kv
        WHEN new.scope IS NOT NULL AND new.expires_at < new.sweep_at
        BEGIN UPDATE kv SET sweep_at = new.expires_at WHERE id = new.id; END""",
        """CREATE TRIGGER kv_scope_added AFTER INSERT ON kv WHEN new.scope IS NOT NULL
        BEGIN UPDATE scope SET n = n + 1 WHERE id = new.scope; END""",
        """CREATE TRIGGER kv_scope_removed AFTER DELETE ON kv WHEN old.scope IS NOT NULL
        BEGIN UPDATE scope SET n = n - 1 WHERE id = old.scope; END""",
        """CREATE TRIGGER kv_scope_changed AFTER UPDATE OF scope ON kv
        WHEN old.scope IS NOT new.scope
        BEGIN
            UPDATE scope SET n = n - 1 WHERE id = old.scope;
            UPDATE scope SET n = n + 1 WHERE id = new.scope;
        END""",
        """CREATE TRIGGER kv_ix_deleted AFTER DELETE ON kv WHEN old.length IS NOT NULL
        BEGIN DELETE FROM ix WHERE list_id = old.id; END""",
        """CREATE TRIGGER kv_ix_replaced AFTER UPDATE OF length ON kv
        WHEN old.length IS NOT NULL AND new.length IS NULL
        BEGIN DELETE FROM ix WHERE list_id = old.id; END""",
        # A list filed under further scopes is re-scored there by the statement that re-scores
        # its kv row; an unfiled list's append skips it (no ix rows without a first scope).
        """CREATE TRIGGER kv_rescored AFTER UPDATE OF score ON kv
        WHEN new.scope IS NOT NULL AND new.score IS NOT old.score
        BEGIN UPDATE ix SET score = new.score WHERE list_id = new.id; END""",
        """CREATE TRIGGER ix_added AFTER INSERT ON ix
        BEGIN UPDATE scope SET n = n + 1 WHERE id = new.scope; END""",
        """CREATE TRIGGER ix_removed AFTER DELETE ON ix
        BEGIN UPDATE scope SET n = n - 1 WHERE id = old.scope; END""",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

# Upserts a scope and returns its id (DO UPDATE, not DO NOTHING, so an existing row answers too).
_SCOPE_ID: Final = (
    "INSERT INTO scope (ns, name) VALUES (?, ?)"
    " ON CONFLICT (ns, name) DO UPDATE SET n = n RETURNING id"
)


def _iso_micros(stamp: object) -> int:
    """Microseconds since the epoch of an ISO 8601 timestamp as threadstore stores them."""
    if type(stamp) is not str:
        raise ValueError("not a timestamp")
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def _backfill_index(conn: sqlite3.Connection) -> None:
    """v2 -> v3: file every live thread of every namespace under ALL_THREADS, scored by its last
    activity (its last turn's timestamp, or its creation time when it has no turns)."""
    now = _now_ms()
    rows = conn.execute(
        "SELECT kv.ns, kv.id, kv.length, head.value, last.value FROM kv"
        " JOIN item AS head ON head.list_id = kv.id AND head.idx = 0"
        " JOIN item AS last ON last.list_id = kv.id AND last.idx = kv.length - 1"
        " WHERE kv.key >= ? AND kv.key < ? AND kv.length IS NOT NULL AND kv.expires_at > ?",
        (KEY_PREFIX, _successor(KEY_PREFIX), now),
    )
    scopes: dict[int, int] = {}
    skipped = 0
    for ns, list_id, length, head, last in rows.fetchall():
        try:
            if length == 1:
                score = _iso_micros(json.loads(head)["created_at"])
            else:
                score = _iso_micros(json.loads(last)["timestamp"])
        except (ValueError, TypeError, KeyError, OverflowError):
            skipped += 1
            continue
        if ns not in scopes:
            scopes[ns] = conn.execute(_SCOPE_ID, (ns, ALL_THREADS)).fetchone()[0]
        conn.execute(
            "UPDATE kv SET scope = ?, score = ?, sweep_at = expires_at WHERE id = ?",
            (scopes[ns], max(0, score), list_id),
        )
    if skipped:
        log.warning("threadstore: %d undecodable threads were left out of the index", skipped)


# Python steps run after a migration's statements, by the version they lead to.
_MIGRATION_HOOKS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {3: _backfill_index}

# Connections inherited through fork() must be neither used nor closed by the child (closing one
# could run a checkpoint or drop locks the parent relies on): they are parked here for good.
_INHERITED: list[sqlite3.Connection] = []
_STORES: weakref.WeakSet[SQLiteStorage] = weakref.WeakSet()


_pid = os.getpid()  # kept current by the fork hook: cheaper than a getpid() call per operation
CLOSE_DRAIN_EXTRA_SECONDS: Final = 5.0  # close() waits busy_timeout plus this for calls in flight
IDENTITY_CHECK_SECONDS: Final = 0.5  # reads check the file is still the one opened this often


def _pause_before_fork(deadline: float) -> None:
    """No thread of this process may be inside SQLite when it forks: a child would inherit its
    mutexes and locks held, and hang on them. Calls in flight drain (bounded), new ones wait."""
    for store in list(_STORES):
        store._pause(deadline)


def _resume_in_parent() -> None:
    for store in list(_STORES):
        store._resume()


def _reinit_after_fork() -> None:
    global _pid
    _pid = os.getpid()
    for store in list(_STORES):
        store._reinit_in_child()


_forking.register(
    before=_pause_before_fork,
    after_in_parent=_resume_in_parent,
    after_in_child=_reinit_after_fork,
)


def _ident(entry: tuple[int, weakref.ref[threading.Thread], sqlite3.Connection]) -> int | None:
    thread = entry[1]()
    return None if thread is None else thread.ident


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", -1)) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in (_BUSY, _LOCKED)


def _not_utf8(what: str) -> InvalidInput:
    return InvalidInput(f"{what} must be valid Unicode text (no lone surrogates)")


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be stored; skip to the next character
        last = 0xE000
    return stripped[:-1] + chr(last)


class SQLiteStorage(Storage):
    """A SQLite file (WAL) shared by every thread and process of a machine.

    ``path`` is a file path or ``":memory:"`` (a private in-process database, for tests; threads of
    the process share it). Expiry times are wall-clock milliseconds, so processes sharing a file
    must share a clock. See the module docstring for the layout, locking and error rules.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        self.namespace = check_namespace(namespace, "namespace")
        sync = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if sync not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous={synchronous!r} is not valid: expected NORMAL or FULL")
        if type(busy_timeout_ms) is not int or not 0 <= busy_timeout_ms <= MAX_BUSY_TIMEOUT_MS:
            raise ConfigError(
                f"busy_timeout_ms={busy_timeout_ms!r} is not valid:"
                f" expected a whole number of milliseconds from 0 to {MAX_BUSY_TIMEOUT_MS}"
            )
        raw = os.fspath(path)
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"sqlite path must be a non-empty str, got {path!r}")
        self._memory = raw == _MEMORY
        self._path = raw if self._memory else os.path.abspath(os.path.expanduser(raw))
        # Files are opened read-write only, never created by SQLite: _prepare_file creates them
        # (mode 0600), and a file deleted under a running store is not silently re-created.
        self._target = (
            f"file:/threadstore-{os.getpid()}-{uuid.uuid4().hex}?vfs=memdb"
            if self._memory
            else f"file:{quote(self._path)}?mode=rw"
        )
        self._synchronous: str = sync
        self._busy_ms = busy_timeout_ms
        self._busy_s = busy_timeout_ms / 1000
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _conns and _closed
        self._write_lock = threading.Lock()  # threads of this process queue here, not in SQLite
        self._conns: list[tuple[int, weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._closed = False
        # The gate: every call runs between _enter() and _leave(), counted per thread, so close()
        # and fork() can wait until no thread executes on a connection (see _enter).
        self._gate = threading.Condition(threading.Lock())
        self._inflight: dict[int, int] = {}  # thread ident -> nesting depth of its calls
        self._paused = False  # a fork() is waiting for the calls in flight to drain
        self._drained = True  # the last pause saw every call leave in time
        self._broken: str | None = None  # why this store refuses every call (file swapped, ...)
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._checked_at = 0.0  # monotonic time of the last identity check made by a read
        self._ns = 0
        self._countdown = SWEEP_EVERY
        self._hits = self._misses = self._expired = 0
        _STORES.add(self)
        try:
            if not self._memory:
                self._prepare_file()
            self._enter()
            try:
                conn = self._conn()  # the first connection checks the file before changing it
                self._ns = self._retry_busy(lambda: self._setup(conn), time.monotonic(), conn)
            finally:
                self._leave()
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> SQLiteStorage:
        """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.

        Options: ``?synchronous=NORMAL|FULL`` and ``?busy_timeout_ms=5000``.
        """
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "sqlite" or not sep:
            raise ConfigError(f"not a sqlite URL: {url!r}")
        path, _, query = rest.partition("?")
        if not path.startswith("/"):
            raise ConfigError(
                f"sqlite URL {url!r} names a host; use sqlite:///relative/path.db,"
                " sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        path = path[1:]
        if not path:
            raise ConfigError(f"sqlite URL {url!r} has no path, e.g. sqlite:///threads.db")
        sync: str = "NORMAL"
        busy = DEFAULT_BUSY_TIMEOUT_MS
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == "synchronous":
                if value.upper() not in ("NORMAL", "FULL"):
                    raise ConfigError(
                        f"sqlite URL option synchronous={value!r} is not valid: expected NORMAL"
                        " or FULL"
                    )
                sync = value.upper()
            elif name == "busy_timeout_ms":
                try:
                    busy = int(value)
                except ValueError:
                    busy = -1
                if not 0 <= busy <= MAX_BUSY_TIMEOUT_MS:
                    raise ConfigError(
                        f"sqlite URL option busy_timeout_ms={value!r} is not valid: expected a"
                        f" whole number of milliseconds from 0 to {MAX_BUSY_TIMEOUT_MS}"
                    )
            else:
                raise ConfigError(
                    f"unknown sqlite URL option {name!r}; accepted: {', '.join(_URL_OPTIONS)}"
                )
        return cls(
            path,
            namespace=namespace,
            synchronous=cast(Synchronous, sync),
            busy_timeout_ms=busy,
        )

    @property
    def url(self) -> str:
        return f"sqlite:///{self._path}"

    @property
    def path(self) -> str:
        """The database file (absolute), or ":memory:"."""
        return self._path

    # -- opening ----------------------------------------------------------------------------------
    def _prepare_file(self) -> None:
        """Create missing directories (0700) and the file (0600) before SQLite opens it."""
        path = self._path
        missing: list[str] = []
        parent = os.path.dirname(path)
        while parent and not os.path.exists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create directory {directory} for {path}: {exc.strerror}"
                ) from exc
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot open {path} for reading and writing: {exc.strerror}"
            ) from exc
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._identity = (st.st_dev, st.st_ino)

    def _check_identity(self) -> None:
        """Refuse to go on when the file at our path is no longer the one opened.

        A file replaced (a backup restored with ``mv``) or deleted under a running store would
        leave old connections on the old file and new ones on another file (or a new, empty one),
        with namespace ids cached from the first: threads of one namespace would show in another.
        """
        if self._identity is None:
            return
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            reason = "was deleted"
        except OSError as exc:
            raise StorageUnavailable(f"cannot stat {self._path}: {exc.strerror}") from exc
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                return
            reason = "was replaced by another file (its device or inode changed)"
        self._broken = (
            f"the sqlite database {self._path} {reason} while this store had it open; it refuses"
            " to continue so that two files are never mixed: open a new store"
        )
        raise StorageUnavailable(self._broken)

    def _check_file(self, conn: sqlite3.Connection) -> None:
        """Refuse, before anything is written, a file threadstore must not touch."""
        try:
            # One statement: one snapshot, never half of another process's initialisation.
            version, app_id, tables = conn.execute(
                "SELECT (SELECT user_version FROM pragma_user_version),"
                " (SELECT application_id FROM pragma_application_id),"
                " (SELECT count(*) FROM sqlite_master)"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            if _code(exc) not in (_CORRUPT, _NOTADB):
                raise  # busy: retried; anything else: translated by the caller
            raise ConfigError(
                f"{self._path} is not a usable SQLite database ({exc}); threadstore left it"
                " untouched: move it away or choose another path"
            ) from exc
        if app_id not in (0, APPLICATION_ID) or (version == 0 and tables and app_id == 0):
            raise ConfigError(
                f"{self._path} is a SQLite database of another application; threadstore left it"
                " untouched: choose another path"
            )
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self._path} has schema version {version}, written by a newer threadstore; this"
                f" version reads up to {SCHEMA_VERSION}: upgrade threadstore (the file was left"
                " untouched)"
            )

    def _setup(self, conn: sqlite3.Connection) -> int:
        """Migrate an older (or new, empty) file; return this store's namespace id."""
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._migrate(conn)  # checks the file again, in the transaction that initialises it
        row = conn.execute("SELECT id FROM namespace WHERE name = ?", (self.namespace,)).fetchone()
        if row is None:
            with self._write_lock:
                conn.execute("INSERT OR IGNORE INTO namespace (name) VALUES (?)", (self.namespace,))
            row = conn.execute(
                "SELECT id FROM namespace WHERE name = ?", (self.namespace,)
            ).fetchone()
        return int(row[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write_lock:
            try:  # BEGIN inside: a Ctrl-C just after it must roll back
                conn.execute("BEGIN IMMEDIATE")
                # Another process may have initialised the file since it was checked: the check
                # and the initialisation are one transaction, so it never sees half of either.
                self._check_file(conn)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for step in range(version, SCHEMA_VERSION):
                    for sql in _MIGRATIONS[step]:
                        conn.execute(sql)
                    hook = _MIGRATION_HOOKS.get(step + 1)
                    if hook is not None:
                        hook(conn)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- the gate -------------------------------------------------------------------------------
    def _enter(self) -> None:
        """Count this thread in flight, or refuse (closed, broken); wait while a fork() drains.

        close() waits for the calls in flight before it closes connections, and fork() waits so
        that no thread is inside SQLite when the process forks. A thread already in flight
        (a nested call) goes through at once, so the gate never waits on its own caller.

        Lock-free unless the store is stopping: a call marks itself in ``_inflight`` (only its
        own thread writes that key, and one dict operation is atomic in CPython), then looks at
        the flags; close() and fork() set their flag under ``_gate`` before they look at the
        marks. Either the call sees them coming, or they see the call.
        """
        me = get_ident()
        inflight = self._inflight
        depth = inflight.get(me, 0)
        inflight[me] = depth + 1
        if not depth and (self._paused or self._closed or self._broken is not None):
            self._enter_slowly(me)

    def _enter_slowly(self, me: int) -> None:
        """_enter while the store is stopping: take the mark back, wait out a fork(), refuse a
        closed or broken store, or mark again under the gate."""
        with self._gate:
            del self._inflight[me]
            self._gate.notify_all()  # close() or fork() may have seen the mark: it is gone
            while self._paused:
                self._gate.wait()
            if self._closed:
                raise StorageUnavailable(f"the sqlite store {self.url} is closed")
            if self._broken is not None:
                raise StorageUnavailable(self._broken)
            self._inflight[me] = 1

    def _leave(self) -> None:
        me = get_ident()
        inflight = self._inflight
        depth = inflight.pop(me) - 1
        if depth:
            inflight[me] = depth
        elif self._paused or self._closed:
            self._left_while_stopping()

    def _left_while_stopping(self) -> None:
        with self._gate:
            closed = self._closed
            self._gate.notify_all()  # close() or fork() waits for the marks to go
        if closed:  # close() may give up waiting for this thread: it closes its own connection
            pair: tuple[int, sqlite3.Cursor] | None = getattr(self._local, "pair", None)
            if pair is not None and pair[0] == _pid:
                with contextlib.suppress(sqlite3.Error):
                    pair[1].connection.close()

    def _others_in_flight(self, me: int) -> list[int]:
        """Threads other than ``me`` inside a call (a copy: the marks change without a lock)."""
        return [ident for ident in list(self._inflight) if ident != me]

    def _pause(self, deadline: float) -> None:
        """Before fork(): stop new calls, wait (until ``deadline``) for those in flight."""
        me = get_ident()
        with self._gate:
            self._paused = True
            while self._others_in_flight(me):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._gate.wait(left)
            self._drained = not self._others_in_flight(me)

    def _resume(self) -> None:
        with self._gate:
            self._paused = False
            self._gate.notify_all()

    def _reinit_in_child(self) -> None:
        """After fork(), in the child: fresh locks; the parent's connections are never used."""
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._gate = threading.Condition(threading.Lock())
        me = get_ident()
        self._inflight = {me: self._inflight[me]} if me in self._inflight else {}
        self._paused = False
        if not self._drained and self._broken is None:
            self._broken = (
                f"the sqlite store {self.url} was in use by another thread when this process"
                " forked, so its state cannot be trusted here: open a new store in the child"
                " process (threadstore.open_storage)"
            )

    # -- connections ------------------------------------------------------------------------------
    def _cursor(self) -> sqlite3.Cursor:
        """This thread's cursor (on this thread's connection, opened on first use)."""
        pair: tuple[int, sqlite3.Cursor] | None = getattr(self._local, "pair", None)
        if pair is not None and pair[0] == _pid:
            return pair[1]
        return self._connect().cursor()

    def _conn(self) -> sqlite3.Connection:
        return self._cursor().connection

    def _connect(self) -> sqlite3.Connection:
        pid = os.getpid()
        with self._lock:
            if self._closed:
                raise StorageUnavailable(f"the sqlite store {self.url} is closed")
            first = not self._conns
            keep, stale = [], []
            for entry in self._conns:
                thread = entry[1]()
                if entry[0] != pid:
                    _INHERITED.append(entry[2])  # from before a fork(): park, never touch
                elif thread is None or not thread.is_alive():
                    stale.append(entry[2])  # its thread is gone
                else:
                    keep.append(entry)
            self._conns = keep
        for old in stale:
            with contextlib.suppress(sqlite3.Error):
                old.close()
        conn = self._new_connection(check=first and self._ns == 0)
        with self._lock:
            if self._closed:
                conn.close()
                raise StorageUnavailable(f"the sqlite store {self.url} is closed")
            self._conns.append((pid, weakref.ref(threading.current_thread()), conn))
        self._local.pair = (pid, conn.cursor())
        return conn

    def _new_connection(self, *, check: bool) -> sqlite3.Connection:
        self._check_identity()
        try:
            conn = sqlite3.connect(
                self._target,
                timeout=self._busy_s,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            self._check_identity()  # the same file before and after: this connection is on it
        except BaseException:
            conn.close()
            raise
        try:
            if self._memory:
                conn.execute("PRAGMA journal_mode = MEMORY")
                return conn
            t0 = time.monotonic()
            if check:
                self._retry_busy(lambda: self._check_file(conn), t0, conn)
            mode = self._retry_busy(
                lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0], t0, conn
            )
            if str(mode).lower() != "wal":
                raise StorageUnavailable(f"cannot put {self._path} in WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc) from exc
            raise
        return conn

    # -- error handling ---------------------------------------------------------------------------
    def _undecodable(self, key: str) -> CorruptData:
        return CorruptData(
            f"key {key!r} in sqlite database {self._path} holds a value that is not UTF-8 text"
            " (written by another program?); delete or rewrite that key"
        )

    def _translate(self, exc: sqlite3.Error) -> ThreadstoreError:
        where = f"sqlite database {self._path}"
        if isinstance(exc, sqlite3.ProgrammingError) and self._closed:
            return StorageUnavailable(f"the sqlite store {self.url} is closed")
        code = _code(exc)
        if code in (_CORRUPT, _NOTADB):
            return CorruptData(f"{where} is corrupt ({exc}); restore it from a backup")
        if code in (_BUSY, _LOCKED):
            return StorageUnavailable(
                f"{where} stayed locked by another connection for more than"
                f" {self._busy_s:g} s (busy_timeout_ms={self._busy_ms})"
            )
        if code == _FULL:
            return StorageUnavailable(f"{where}: the disk or quota is full ({exc})")
        if code == _READONLY:
            return StorageUnavailable(
                f"{where} is read-only ({exc}): the file and its directory must be writable"
            )
        if code == _CANTOPEN:
            return StorageUnavailable(
                f"cannot open {where} ({exc}): the file and its directory must be writable"
                " (SQLite creates -wal and -shm files next to it)"
            )
        if code == _IOERR:
            return StorageUnavailable(f"{where}: I/O error ({exc})")
        return StorageUnavailable(f"{where}: {exc}")

    def _retry_busy(
        self, attempt: Callable[[], T], t0: float, conn: sqlite3.Connection | None = None
    ) -> T:
        """Run ``attempt``; on SQLITE_BUSY retry with randomized backoff until the deadline."""
        try:
            return attempt()
        except sqlite3.Error as exc:
            return self._retry_after(exc, attempt, t0, conn)

    def _retry_after(
        self,
        exc: sqlite3.Error,
        attempt: Callable[[], T],
        t0: float,
        conn: sqlite3.Connection | None = None,
    ) -> T:
        tries = 0
        tuned = False
        try:
            while True:
                if not _is_busy(exc):
                    raise self._translate(exc) from exc
                left = self._busy_s - (time.monotonic() - t0)
                if left <= 0:
                    raise self._translate(exc) from exc
                time.sleep(min(left, random.uniform(0.0005, min(0.05, 0.001 * 2**tries))))
                tries += 1
                if conn is None:
                    conn = self._conn()
                left_ms = max(1, int((self._busy_s - (time.monotonic() - t0)) * 1000))
                conn.execute(f"PRAGMA busy_timeout = {left_ms}")  # SQLite's wait ends in time
                tuned = True
                try:
                    return attempt()
                except sqlite3.Error as again:
                    exc = again
        finally:
            if tuned and conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def _read(self, sql: str, params: tuple[object, ...], key: str = "") -> list[Any]:
        self._enter()
        try:
            now = time.monotonic()
            if now - self._checked_at > IDENTITY_CHECK_SECONDS:  # writes check every time
                self._checked_at = now
                self._check_identity()
            return self._cursor().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" in str(exc):  # text written by another program, not UTF-8
                raise self._undecodable(key) from None
            return self._retry_after(
                exc, lambda: self._cursor().execute(sql, params).fetchall(), time.monotonic()
            )
        except sqlite3.Error as exc:
            return self._retry_after(
                exc, lambda: self._cursor().execute(sql, params).fetchall(), time.monotonic()
            )
        except UnicodeEncodeError:
            raise _not_utf8("key") from None
        finally:
            self._leave()

    def _write(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        """One statement, autocommit: it takes the write lock when it starts (as IMMEDIATE)."""
        t0 = time.monotonic()
        self._enter()
        try:
            self._check_identity()
            with self._write_lock:  # not acquire() + try: a Ctrl-C between them would keep it
                try:
                    rows = self._cursor().execute(sql, params).fetchall()
                except sqlite3.Error as exc:
                    rows = self._retry_after(
                        exc, lambda: self._cursor().execute(sql, params).fetchall(), t0
                    )
                except UnicodeEncodeError:
                    raise _not_utf8("key and value") from None
        finally:
            self._leave()
        self._countdown -= 1
        if self._countdown <= 0:
            self._auto_sweep()
        return rows

    def _transact(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in a BEGIN IMMEDIATE transaction, retried as a whole while busy."""

        def attempt() -> T:
            conn = self._conn()
            try:  # BEGIN inside: a Ctrl-C just after it must roll back
                conn.execute("BEGIN IMMEDIATE")
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

        t0 = time.monotonic()
        self._enter()
        try:
            self._check_identity()
            with self._write_lock:
                try:
                    result = self._retry_busy(attempt, t0)
                except UnicodeEncodeError:
                    raise _not_utf8("key and value") from None
        finally:
            self._leave()
        self._countdown -= 1
        if self._countdown <= 0:
            self._auto_sweep()
        return result

    # -- expiry -----------------------------------------------------------------------------------
    def _auto_sweep(self) -> None:
        """The incremental pass writes make: errors are logged, never raised (the write is done)."""
        try:
            more = self.sweep(SWEEP_BATCH)
        except ThreadstoreError as exc:
            more = False
            log.debug("threadstore: expiry sweep of %s skipped: %s", self._path, exc)
        self._countdown = 1 if more else SWEEP_EVERY

    def sweep(self, budget: int = SWEEP_BATCH) -> bool:
        """Delete up to ``budget`` expired keys (any namespace) now; True if more are waiting."""
        if type(budget) is not int or budget < 1:
            raise InvalidInput(f"budget must be a positive int, got {budget!r}")

        def attempt() -> tuple[int, bool]:
            conn = self._conn()
            try:  # BEGIN inside: a Ctrl-C just after it must roll back
                conn.execute("BEGIN IMMEDIATE")
                now = _now_ms()
                removed = conn.execute(  # unfiled keys: kv_expires_at, exact
                    "DELETE FROM kv WHERE id IN (SELECT id FROM kv WHERE scope IS NULL"
                    " AND expires_at <= ? ORDER BY expires_at LIMIT ?)",
                    (now, budget),
                ).rowcount
                due = conn.execute(  # filed lists: kv_sweep, a lower bound of their expiry
                    "SELECT id, expires_at <= ?1 FROM kv WHERE scope IS NOT NULL"
                    " AND sweep_at <= ?1 ORDER BY sweep_at LIMIT ?2",
                    (now, budget),
                ).fetchall()
                for list_id, expired in due:
                    if expired:
                        removed += conn.execute("DELETE FROM kv WHERE id = ?", (list_id,)).rowcount
                    else:  # refreshed since it was filed: file it where it belongs now
                        conn.execute("UPDATE kv SET sweep_at = expires_at WHERE id = ?", (list_id,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return removed, removed >= budget or len(due) >= budget

        t0 = time.monotonic()
        self._enter()
        try:
            with self._write_lock:
                removed, more = self._retry_busy(attempt, t0)
        finally:
            self._leave()
        self._expired += removed
        return more

    # -- strings ----------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        check_key(key)
        rows = self._read(
            "SELECT value FROM kv WHERE ns = ? AND key = ? AND expires_at > ?",
            (self._ns, key, _now_ms()),
            key,
        )
        if rows:
            value: str | None = rows[0][0]
            if type(value) is not str:
                if value is None:
                    raise WrongType(f"key {key!r} holds a list, not a string")
                raise self._undecodable(key)  # a BLOB
            self._hits += 1
            return value
        self._misses += 1
        return None

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        check_key(key)
        check_value(value)
        expires_at = _now_ms() + ttl_ms(ttl_seconds)
        # A list replaced here loses its items through the kv_list_replaced trigger.
        self._write(
            "INSERT INTO kv (ns, key, value, length, expires_at) VALUES (?, ?, ?, NULL, ?)"
            " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, length = NULL,"
            " expires_at = excluded.expires_at, scope = NULL, score = NULL, sweep_at = NULL",
            (self._ns, key, value, expires_at),
        )

    def delete(self, key: str) -> bool:
        check_key(key)
        now = _now_ms()  # before the delete: a key live when the call started counts
        rows = self._write(
            "DELETE FROM kv WHERE ns = ? AND key = ? RETURNING expires_at", (self._ns, key)
        )
        return bool(rows) and rows[0][0] > now

    def exists(self, key: str) -> bool:
        check_key(key)
        return bool(
            self._read(
                "SELECT 1 FROM kv WHERE ns = ? AND key = ? AND expires_at > ?",
                (self._ns, key, _now_ms()),
            )
        )

    def ttl(self, key: str) -> float | None:
        check_key(key)
        now = _now_ms()
        rows = self._read(
            "SELECT expires_at FROM kv WHERE ns = ? AND key = ? AND expires_at > ?",
            (self._ns, key, now),
        )
        return (rows[0][0] - now) / 1000 if rows else None

    def expire(self, key: str, ttl_seconds: float) -> bool:
        check_key(key)
        ms = ttl_ms(ttl_seconds)
        now = _now_ms()
        rows = self._write(
            "UPDATE kv SET expires_at = ? WHERE ns = ? AND key = ? AND expires_at > ? RETURNING 1",
            (now + ms, self._ns, key, now),
        )
        return bool(rows)

    def scan(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        if self._closed:  # fail here, not at the first next()
            raise StorageUnavailable(f"the sqlite store {self.url} is closed")
        return self._scan(prefix)

    def _scan(self, prefix: str) -> Iterator[str]:
        # Pages of keys in key order, each one short statement: no read transaction stays open
        # while the caller iterates. The prefix is a literal range, never a LIKE pattern.
        upper = _successor(prefix) if prefix else None
        sql = "SELECT key FROM kv WHERE ns = ? AND key >= ? AND expires_at > ?"
        if upper is not None:
            sql += " AND key < ?"
        sql += f" ORDER BY key LIMIT {SCAN_PAGE}"
        start = prefix
        while True:
            params: tuple[object, ...] = (self._ns, start, _now_ms())
            rows = self._read(sql, params if upper is None else (*params, upper))
            for (key,) in rows:
                if key.startswith(prefix):
                    yield key
            if len(rows) < SCAN_PAGE:
                return
            start = rows[-1][0] + "\x00"  # keys hold no NUL: the next key after the last one

    # -- lists ------------------------------------------------------------------------------------
    def list_create(
        self,
        key: str,
        ttl_seconds: float,
        first: str,
        *,
        scopes: tuple[str, ...] | list[str] = (),
        score: int = 0,
    ) -> bool:
        check_key(key)
        check_value(first, "first")
        ms = ttl_ms(ttl_seconds)
        scopes = check_scopes(scopes)
        check_score(score)
        ns = self._ns

        def body(conn: sqlite3.Connection) -> bool:
            now = _now_ms()
            # An expired row (and, by trigger, its items) makes way for the new list.
            conn.execute(
                "DELETE FROM kv WHERE ns = ? AND key = ? AND expires_at <= ?", (ns, key, now)
            )
            primary = self._scope_id(conn, scopes[0]) if scopes else None
            rows = conn.execute(  # a filed list's expiry is filed in kv_sweep (sweep_at)
                "INSERT INTO kv (ns, key, value, length, expires_at, scope, score, sweep_at)"
                " VALUES (?1, ?2, NULL, 1, ?3, ?4, ?5, iif(?4 IS NULL, NULL, ?3))"
                " ON CONFLICT (ns, key) DO NOTHING RETURNING id",
                (ns, key, now + ms, primary, score if scopes else None),
            ).fetchall()
            if not rows:
                return False
            conn.execute(
                "INSERT INTO item (list_id, idx, value) VALUES (?, 0, ?)", (rows[0][0], first)
            )
            for name in scopes[1:]:
                self._file(conn, rows[0][0], key, name, score)
            return True

        return self._transact(body)

    def _file(
        self,
        conn: sqlite3.Connection,
        list_id: int,
        key: str,
        scope: str,
        score: int,
    ) -> None:
        """File a list under a further scope (its first one is in its kv row)."""
        conn.execute(
            "INSERT INTO ix (scope, list_id, key, score) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope, list_id) DO UPDATE SET score = excluded.score",
            (self._scope_id(conn, scope), list_id, key, score),
        )

    def _scope_id(self, conn: sqlite3.Connection, scope: str) -> int:
        return int(conn.execute(_SCOPE_ID, (self._ns, scope)).fetchone()[0])

    def list_append(
        self,
        key: str,
        value: str,
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        check_key(key)
        check_value(value)
        check_max_items(max_items)
        ms = ttl_ms(ttl_seconds)
        if score is not None:
            check_score(score)
        ns = self._ns

        def body(conn: sqlite3.Connection) -> int:
            now = _now_ms()
            # The score goes into a filed list's row (kv_page moves it; the trigger kv_rescored
            # re-scores its further scopes in ix), never lowering it: activity only grows. An
            # unfiled list's row is updated as before.
            rows = conn.execute(
                "UPDATE kv SET length = length + 1, expires_at = ?,"
                " score = iif(scope IS NULL, score, max(score, coalesce(?, score)))"
                " WHERE ns = ? AND key = ? AND expires_at > ? AND length < ?"
                " RETURNING id, length",
                (now + ms, score, ns, key, now, max_items),
            ).fetchall()
            if rows:
                list_id, length = rows[0]
                conn.execute(
                    "INSERT INTO item (list_id, idx, value) VALUES (?, ?, ?)",
                    (list_id, length - 1, value),
                )
                return int(length)
            found = conn.execute(
                "SELECT length FROM kv WHERE ns = ? AND key = ? AND expires_at > ?", (ns, key, now)
            ).fetchall()
            if not found:
                return APPEND_MISSING
            if found[0][0] is None:
                raise WrongType(f"key {key!r} holds a string, not a list")
            return APPEND_FULL

        return self._transact(body)

    def list_append_many(
        self,
        key: str,
        values: list[str],
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        check_key(key)
        values = check_values(values)
        check_max_items(max_items)
        ms = ttl_ms(ttl_seconds)
        if score is not None:
            check_score(score)
        ns, count = self._ns, len(values)

        def body(conn: sqlite3.Connection) -> int:
            now = _now_ms()
            rows = conn.execute(  # the score as in list_append
                "UPDATE kv SET length = length + ?, expires_at = ?,"
                " score = iif(scope IS NULL, score, max(score, coalesce(?, score)))"
                " WHERE ns = ? AND key = ? AND expires_at > ? AND length <= ? - ?"
                " RETURNING id, length",
                (count, now + ms, score, ns, key, now, max_items, count),
            ).fetchall()
            if rows:
                list_id, length = rows[0]
                first = length - count
                conn.executemany(
                    "INSERT INTO item (list_id, idx, value) VALUES (?, ?, ?)",
                    [(list_id, first + i, v) for i, v in enumerate(values)],
                )
                return int(length)
            return self._append_refused(conn, key, now)

        return self._transact(body)

    def _append_refused(self, conn: sqlite3.Connection, key: str, now: int) -> int:
        found = conn.execute(
            "SELECT length FROM kv WHERE ns = ? AND key = ? AND expires_at > ?",
            (self._ns, key, now),
        ).fetchall()
        if not found:
            return APPEND_MISSING
        if found[0][0] is None:
            raise WrongType(f"key {key!r} holds a string, not a list")
        return APPEND_FULL

    def list_pop(self, key: str, *, ttl_seconds: float) -> str | None:
        check_key(key)
        ms = ttl_ms(ttl_seconds)
        ns = self._ns

        def body(conn: sqlite3.Connection) -> str | None:
            now = _now_ms()
            rows = conn.execute(
                "UPDATE kv SET length = length - 1, expires_at = ?"
                " WHERE ns = ? AND key = ? AND expires_at > ? AND length > 1 RETURNING id, length",
                (now + ms, ns, key, now),
            ).fetchall()
            if not rows:
                self._append_refused(conn, key, now)  # WrongType when it holds a string
                return None
            list_id, length = rows[0]
            popped = conn.execute(
                "DELETE FROM item WHERE list_id = ? AND idx = ? RETURNING value", (list_id, length)
            ).fetchall()
            if not popped or type(popped[0][0]) is not str:
                raise self._undecodable(key)  # rolled back: nothing changed
            value: str = popped[0][0]  # the index reads its expiry from kv; the score is kept
            return value

        return self._transact(body)

    def list_range(self, key: str, start: int = 0, stop: int | None = None) -> list[str]:
        check_key(key)
        check_range(start, stop)
        # One statement, so the length check and the items come from one snapshot.
        rows = self._read(
            "SELECT kv.length, item.value FROM kv LEFT JOIN item"
            " ON item.list_id = kv.id AND item.idx >= ? AND item.idx < ?"
            " WHERE kv.ns = ? AND kv.key = ? AND kv.expires_at > ? ORDER BY item.idx",
            (
                min(start, _MAX_INDEX),
                _MAX_INDEX if stop is None else min(stop, _MAX_INDEX),
                self._ns,
                key,
                _now_ms(),
            ),
            key,
        )
        if not rows:
            self._misses += 1
            return []
        if rows[0][0] is None:
            raise WrongType(f"key {key!r} holds a string, not a list")
        items = [value for _, value in rows if value is not None]
        if any(type(v) is not str for v in items):
            raise self._undecodable(key)  # a BLOB
        self._hits += 1
        return items

    def list_length(self, key: str) -> int:
        check_key(key)
        rows = self._read(
            "SELECT length FROM kv WHERE ns = ? AND key = ? AND expires_at > ?",
            (self._ns, key, _now_ms()),
        )
        if not rows:
            return 0
        if rows[0][0] is None:
            raise WrongType(f"key {key!r} holds a string, not a list")
        return int(rows[0][0])

    def list_ends(self, key: str) -> ListEnds | None:
        check_key(key)
        now = _now_ms()
        rows = self._read(  # one statement: one snapshot
            "SELECT kv.length, kv.expires_at, first.value, last.value FROM kv"
            " LEFT JOIN item AS first ON first.list_id = kv.id AND first.idx = 0"
            " LEFT JOIN item AS last ON last.list_id = kv.id AND last.idx = kv.length - 1"
            " WHERE kv.ns = ? AND kv.key = ? AND kv.expires_at > ?",
            (self._ns, key, now),
            key,
        )
        if not rows:
            self._misses += 1
            return None
        length, expires_at, first, last = rows[0]
        if length is None:
            raise WrongType(f"key {key!r} holds a string, not a list")
        if first is None or last is None:
            raise CorruptData(f"list {key!r} in sqlite database {self._path} lacks an item")
        if type(first) is not str or type(last) is not str:
            raise self._undecodable(key)  # a BLOB
        self._hits += 1
        return int(length), first, last, (expires_at - now) / 1000

    # -- activity index ---------------------------------------------------------------------------
    def index_put(self, key: str, scopes: tuple[str, ...] | list[str], score: int) -> bool:
        check_key(key)
        scopes = check_scopes(scopes)
        check_score(score)
        ns = self._ns

        def body(conn: sqlite3.Connection) -> bool:
            rows = conn.execute(
                "SELECT id, length, scope FROM kv WHERE ns = ? AND key = ? AND expires_at > ?",
                (ns, key, _now_ms()),
            ).fetchall()
            if not rows:
                return False
            list_id, length, primary = rows[0]
            if length is None:
                raise WrongType(f"key {key!r} holds a string, not a list")
            rest = list(scopes)
            if primary is None and rest:
                primary = self._scope_id(conn, rest.pop(0))
            conn.execute(
                "UPDATE kv SET scope = ?, score = ?, sweep_at = iif(? IS NULL, NULL,"
                " min(coalesce(sweep_at, expires_at), expires_at)) WHERE id = ?",
                (primary, None if primary is None else score, primary, list_id),
            )
            conn.execute("UPDATE ix SET score = ? WHERE list_id = ?", (score, list_id))
            for name in rest:
                if self._scope_id(conn, name) != primary:
                    self._file(conn, list_id, key, name, score)
            return True

        return self._transact(body)

    def index_page(
        self,
        scope: str,
        limit: int,
        after: tuple[int, str] | None = None,
        *,
        ascending: bool = False,
    ) -> list[tuple[int, str]]:
        check_scope(scope)
        limit, after = check_page(limit, after)
        # Two ordered index walks, each at most one page long, merged: the lists filed here
        # first (kv_page) and those filed here as a further scope (ix_page; CROSS JOIN keeps
        # the index walk the outer loop). Each candidate's expiry is checked in its kv row;
        # expired ones are skipped (the sweeps remove them with their kv rows).
        order = "ASC" if ascending else "DESC"
        past = ""
        if after is not None:
            past = " AND ({t}.score, {t}.key) " + (">" if ascending else "<") + " (?, ?)"
        sql = (
            "WITH s AS (SELECT id FROM scope WHERE ns = ? AND name = ?)"
            " SELECT * FROM (SELECT kv.score, kv.key FROM kv"
            " WHERE kv.scope = (SELECT id FROM s) AND kv.expires_at > ?"
            + past.format(t="kv")
            + f" ORDER BY kv.score {order}, kv.key {order} LIMIT {limit})"
            " UNION ALL SELECT * FROM (SELECT ix.score, ix.key FROM ix"
            " CROSS JOIN kv ON kv.id = ix.list_id"
            " WHERE ix.scope = (SELECT id FROM s) AND kv.expires_at > ?"
            + past.format(t="ix")
            + f" ORDER BY ix.score {order}, ix.key {order} LIMIT {limit})"
            f" ORDER BY 1 {order}, 2 {order} LIMIT {limit}"
        )
        now = _now_ms()
        part: tuple[object, ...] = (now,) if after is None else (now, *after)
        params: tuple[object, ...] = (self._ns, scope, *part, *part)
        return [(int(score), str(key)) for score, key in self._read(sql, params)]

    def index_count(self, scope: str) -> int:
        check_scope(scope)
        # n less the scope's lists that expired and were not swept yet: a kv_expires_at range
        # (the sweeps keep it short), each probed in ix by its primary key.
        rows = self._read(
            # (+kv.scope: walk the short due range of kv_sweep, never the scope)
            "SELECT n - (SELECT count(*) FROM kv WHERE kv.scope IS NOT NULL"
            " AND kv.sweep_at <= ?1 AND kv.expires_at <= ?1 AND +kv.scope = scope.id)"
            " - (SELECT count(*) FROM kv CROSS JOIN ix ON ix.scope = scope.id"
            " AND ix.list_id = kv.id WHERE kv.scope IS NOT NULL AND kv.sweep_at <= ?1"
            " AND kv.expires_at <= ?1)"
            " FROM scope WHERE ns = ?2 AND name = ?3",
            (_now_ms(), self._ns, scope),
        )
        return int(rows[0][0]) if rows else 0

    # -- lifecycle --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        keys = self._read(
            "SELECT count(*) FROM kv WHERE ns = ? AND expires_at > ?", (self._ns, _now_ms())
        )[0][0]
        version = self._read("PRAGMA user_version", ())[0][0]
        file_bytes = wal_bytes = 0
        if not self._memory:
            with contextlib.suppress(OSError):
                file_bytes = os.stat(self._path).st_size
            with contextlib.suppress(OSError):
                wal_bytes = os.stat(self._path + "-wal").st_size
        with self._lock:
            connections = sum(1 for entry in self._conns if entry[0] == os.getpid())
        return {
            "backend": self.kind,
            "url": self.url,
            "path": self._path,
            "namespace": self.namespace,
            "keys": keys,
            "file_bytes": file_bytes,
            "wal_bytes": wal_bytes,
            "schema_version": version,
            "synchronous": self._synchronous,
            "busy_timeout_ms": self._busy_ms,
            "connections": connections,
            "hits": self._hits,
            "misses": self._misses,
            "expired": self._expired,
        }

    def close(self) -> None:
        """Close every connection this store opened in this process. Idempotent.

        Calls racing close() either finish or raise StorageUnavailable ("closed"): close() first
        refuses new calls, then waits for those in flight (up to busy_timeout plus a few seconds)
        and never closes a connection another thread is executing on; a thread still in flight
        when close() stops waiting closes its own connection when its call ends.
        """
        pid = os.getpid()
        me = get_ident()
        with self._gate:
            with self._lock:
                self._closed = True
            deadline = time.monotonic() + self._busy_s + CLOSE_DRAIN_EXTRA_SECONDS
            while self._others_in_flight(me):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._gate.wait(left)
            busy = set(self._others_in_flight(me))
            with self._lock:
                conns = [e for e in self._conns if e[0] != pid or _ident(e) not in busy]
                self._conns = [e for e in self._conns if e[0] == pid and _ident(e) in busy]
        for entry in conns:
            if entry[0] != pid:
                _INHERITED.append(entry[2])
            else:
                with contextlib.suppress(sqlite3.Error):
                    entry[2].close()
